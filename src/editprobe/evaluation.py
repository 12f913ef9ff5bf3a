"""``editprobe.evaluate``: an edited model measured against its original, from Python.

The command ``editprobe evaluate`` reads a checkpoint from disk; this takes models a caller
already holds (or references to load), so an editor written in another toolkit can be put
to editprobe's probes without saving anything (docs/evaluate.md).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .errors import OptionError


def evaluate(edited_model: Any, original_model: Any, tokenizer: Any = None, records: str | Path | Sequence[dict] = "counterfact-sample",
             probes: Sequence[str] | None = None, out: str | Path | None = None, *, n: int | None = None,
             label: str | None = None, negation_table: str | None = None, dtype: str | None = None,
             device: str | None = None) -> list:
    """Measure ``edited_model`` against ``original_model`` on the records it was edited with.

    A run of the ``external`` editor (editing/external.py): the original model is measured
    first (the baseline), then the edited weights are written into it for the edited
    model's measurements, and put back. NN and NP need the negated edit, which an edited
    model does not hold: they are "–".

    Parameters:
        edited_model: The edited model: a ``transformers`` model in memory, or a checkpoint
            directory or hub id (safetensors weights, as ``editprobe evaluate --edited`` takes).
        original_model: The unedited model: a model in memory (edited in place while the
            edited model is measured, then restored bit for bit), or a built-in name,
            directory or hub id to load.
        tokenizer: The models' tokenizer (needed with a model in memory; its pad token and
            padding side are set as ``load_model`` sets them). None: the loaded original's.
        records: The records the edit was made with: a dataset file or built-in name, or a
            list of records in a format editprobe reads (e.g. CounterFact dicts).
        probes: The probes (names or ``module:attribute``); None: every default probe, where
            it applies.
        out: A run directory to write, which ``editprobe report`` reads beside editprobe's
            runs; None: nothing is kept.
        n: How many records (None: all of them).
        label: Shown beside ``external`` in the rows (None: the checkpoint's directory name,
            or ``in-memory``).
        negation_table: A user YAML ``template: negated template``, as ``run`` takes it.
        dtype: The dtype of an original model loaded here.
        device: The device of an original model loaded here.

    Returns:
        One :class:`~editprobe.runs.summary.ResultRow` per dataset: ``method`` ``external``,
        ``variant`` the label, the probes' outcomes as ``summary.json`` holds them, and the
        checkpoint's ``fingerprint`` among its ``hparams``.

    Examples:
        ```python
        import editprobe
        from editprobe.models import load_model

        original = load_model("smollm2-135m")
        edited = load_model("runs/memit/models/counterfact-sample__memit").model
        rows = editprobe.evaluate(edited, original.model, original.tokenizer, "counterfact-sample",
                                  n=100, probes=["negation", "factcheck"], out="runs/memit-external")
        print(rows[0].probes["negation"].metrics["PP"].value)
        ```
    """
    from .editing.external import SETTINGS_FILE, in_memory
    from .models.checkpoint import fingerprint, module_fingerprint, resolve_checkpoint
    from .runs.config import RunConfig
    from .runs.loop import Experiment
    from .runs.plan import RunPlan

    with ExitStack() as stack:
        loaded = _original(original_model, tokenizer, dtype, device)
        if isinstance(edited_model, (str, Path)):
            path = resolve_checkpoint(str(edited_model))
            checkpoint, printed, name = str(path.resolve()), fingerprint(path), path.name
        else:
            checkpoint, printed, name = stack.enter_context(in_memory(edited_model)), module_fingerprint(edited_model), \
                "in-memory"
        data = _records_file(records, stack)
        run_dir = Path(out) if out is not None else Path(stack.enter_context(tempfile.TemporaryDirectory())) / "run"
        count = n if n is not None else _count(data)
        fields: dict[str, Any] = {
            "model": loaded.name, "methods": ("external",), "datasets": (data,), "n": count, "batch_size": count,
            "out": run_dir, "hparams": str(SETTINGS_FILE), "negation_table": negation_table,
            "overrides": {"checkpoint": checkpoint, "label": label or name, "fingerprint": printed}}
        if probes:
            fields["probes"] = tuple(probes)
        config = RunConfig.build(fields)
        experiment = Experiment(RunPlan.build(config, loaded=loaded), loaded=loaded, progress=False)
        return list(experiment.run().results)


def _original(original_model, tokenizer, dtype, device):
    from .models.adapters import get_adapter
    from .models.loading import LoadedModel, load_model, prepare_tokenizer

    if isinstance(original_model, (str, Path)):
        loaded = load_model(str(original_model), dtype=dtype, device=device)
        if tokenizer is not None:
            prepare_tokenizer(tokenizer)
            loaded.tokenizer = tokenizer
        return loaded
    if tokenizer is None:
        raise OptionError("evaluate: a model in memory needs its tokenizer (tokenizer=...)")
    prepare_tokenizer(tokenizer)
    name = getattr(original_model.config, "_name_or_path", "") or "model"
    return LoadedModel(original_model.eval(), tokenizer, get_adapter(original_model), name)


def _records_file(records, stack: ExitStack) -> str:
    """A dataset spec: the one given, or a temporary JSON file of the records given."""
    if isinstance(records, (str, Path)):
        return str(records)
    folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="editprobe-records-")))
    path = folder / "records.json"
    path.write_text(json.dumps(list(records)))
    return str(path)


def _count(data: str) -> int:
    from .data import load_records

    return max(1, len(load_records(data).records))
