"""The ``edit`` job: edit N records sequentially, save the editor state, measure efficacy.

Its output directory is an editprobe ``edit`` directory (workdir.py), locked while the job
runs. The result is written at the end: state/ and report.json are staged complete inside
the directory, then renamed into place, report.json last (it marks a complete result), so
a failure while writing keeps an earlier result and a kill never leaves a report.json
beside a state it does not describe. An earlier result is replaced only when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import ConfigDict, Field, ValidationError

import os
import shutil
import tempfile

from ..data.negation import negation_function, with_opposite
from ..data.options import DatasetOptions, MquakeUnit, ZsreTarget
from ..errors import OptionError, OutputError, validation_message
from ..paths import TMP_INFIX, move_into_place, write_json_atomic
from ..workdir import WorkDir
from ..runs.config import Count, DType, ProfileDefaults, ProfileName
from ..editing.lte.target_cache import use_target_cache
from ..runs.lengths import PromptLengths
from ..runs.plan import MethodPlan, choice_needs_kind, read_datasets
from ..runs.preflight import check_model_and_device, check_remote_requirements
from ..runs.sequential import edit_sequentially

REPORT = "report.json"
STATE = "state"


class EditConfig(ProfileDefaults):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    method: str = "memit"
    data: str = "counterfact-sample"
    n: Count = 100
    batch_size: Count = 50
    out: Path
    hparams: str | None = None  # model key, YAML or folder of <method>.yaml; None: the profile's or shipped file
    profile: ProfileName = None  # e.g. "paper" (editing/settings/profiles.py)
    overrides: dict[str, Any] = Field(default_factory=dict)
    dtype: DType = None
    device: str | None = None
    seed: int = 0
    overwrite: bool = False
    target_cache: bool = True  # reuse target vectors computed before (editing/lte/target_cache.py)
    max_prompt_tokens: Count | None = None  # None: the model's context length (runs/lengths.py)
    on_bad_record: Literal["error", "skip"] = "error"
    zsre_target: ZsreTarget = "answers"  # zsRE's edit target (data/options.py)
    mquake_unit: MquakeUnit = "case"  # what n counts in MQuAKE (data/options.py)
    # A user YAML "template: negated" for the requests' opposite query (FT's negation
    # augmentation, negation: defend), over the rules; a record's own negated prompt wins.
    negation_table: str | None = None
    # Also save the edited model as a Hugging Face checkpoint here (docs/evaluate.md).
    save_model: Path | None = None

    @classmethod
    def build(cls, fields: dict[str, Any]) -> "EditConfig":
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            where, message = validation_message(exc)
            raise OptionError(f"--{where.replace('_', '-')}: {message}") from None


def check_edit_output(out: Path, overwrite: bool) -> WorkDir:
    """``out`` may be new, empty, or (with ``overwrite``) an earlier edit result; never a file,
    a run directory or anything else editprobe did not make as an edit result."""
    work = WorkDir(out, "edit")
    work.check()
    if work.is_ours and (work.root / REPORT).is_file() and not overwrite:
        raise OutputError(f"--out {work.root}: holds an earlier edit result (report.json); pass --overwrite to "
                          "replace it, or choose another --out")
    return work


class EditJob:
    """``EditJob(config).preflight()`` (no model loaded, nothing written), then ``.run()``
    (a :class:`~editprobe.runs.plan.Job`)."""

    def __init__(self, config: EditConfig, loaded=None) -> None:
        self.config = config
        self._loaded = loaded
        self._records = None
        self._method: MethodPlan | None = None

    def preflight(self) -> list[str]:
        """Hparams, every record, the output location, the device and the model reference;
        returns warnings about suspicious data."""
        from ..editing.registry import overrides_for

        cfg = self.config
        overrides = overrides_for(cfg.method, cfg.overrides)  # the K_p switch only where it is a setting

        def plan(kind: str | None = None) -> MethodPlan:  # its templates (IKE: demonstrations) follow --seed
            return MethodPlan.build(cfg.method, cfg, overrides, kind=kind).with_run_seed(cfg.seed)

        self._method = None if choice_needs_kind(cfg) else plan()
        # An edit asks each record's prompt (for the target, before and after); nothing else.
        lengths = PromptLengths(cfg.model, cfg.max_prompt_tokens, loaded=self._loaded, probe_prompts=False)
        self._negate = negation_function(cfg.negation_table)  # a bad table fails here
        datasets, warnings = read_datasets([cfg.data], cfg.n, lengths, cfg.on_bad_record,
                                           DatasetOptions(zsre_target=cfg.zsre_target, mquake_unit=cfg.mquake_unit))
        data = datasets[cfg.data]
        self._method = self._method or plan(data.kind)
        self._records = list(data.records)
        self._work = check_edit_output(cfg.out, cfg.overwrite)
        if cfg.save_model is not None:  # before any work: refused for an edit not in the weights
            from ..runs.saved_models import check_save_location, refuse_unsavable

            refuse_unsavable([cfg.method], "--save-model")
            check_save_location(cfg.save_model, cfg.overwrite)
        if self._loaded is None:
            check_model_and_device(cfg.model, cfg.device)
        return warnings

    def run(self, on_progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
        """Edit, measure, write; returns the report. ``on_progress(done, total)`` after each batch."""
        if self._records is None:
            self.preflight()
        with self._work.hold():  # the marker first, the lock for the job's life
            return self._run(on_progress)

    def _run(self, on_progress: Callable[[int, int], None] | None) -> dict[str, Any]:
        from ..models import load_model
        from ..probes.exact import FAST_LABEL, exact_match_batch

        cfg = self.config
        assert self._method is not None
        loaded = self._loaded or load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        editor = self._method.make_editor(loaded.model, loaded.tokenizer, model_id=cfg.model)
        cache = use_target_cache(editor, cfg.target_cache)
        check_remote_requirements(editor.remote_requirements())
        requests = [with_opposite(r, self._negate) for r in self._records]
        pairs = [(r.query, r.target) for r in requests]
        before = exact_match_batch(loaded.model, loaded.tokenizer, pairs)
        reports: list[dict[str, Any]] = []

        def after_batch(b: int, report, seconds: float) -> None:
            reports.append(report.model_dump())
            if on_progress is not None:
                on_progress(min((b + 1) * cfg.batch_size, len(requests)), len(requests))

        edit_sequentially(editor, requests, cfg.batch_size, seed=cfg.seed, stage=f"edit__{cfg.method}",
                          on_batch=after_batch)
        editor.finalize()  # e.g. PRUNE restrains the accumulated edit once, after the last batch
        asked = editor.prompt_transform().completions([q for q, _ in pairs])  # in-context: through its prompt
        after = exact_match_batch(loaded.model, loaded.tokenizer, [(q, t) for q, (_, t) in zip(asked, pairs)])
        provenance = editor.provenance()
        report = {
            "model": cfg.model, "method": cfg.method, "data": cfg.data, "n": len(requests),
            "batch_size": cfg.batch_size, "seed": cfg.seed, "hparams": provenance["hparams"],
            "hparams_file": self._method.choice.model_dump(mode="json"),
            "model_dtype": str(next(loaded.model.parameters()).dtype).removeprefix("torch."),
            "c0": provenance["c0"],
            "metric": FAST_LABEL, "efficacy_before": 100 * sum(before) / len(before),
            "efficacy_after": 100 * sum(after) / len(after), **efficacy_intervals(before, after), "batches": reports,
            "target_cache": cache.stats.as_dict() if cache is not None else None,
        }
        if cfg.save_model is not None:
            self._save_model(loaded, editor)
        self._write_result(editor, report)
        return report

    def _save_model(self, loaded, editor) -> None:
        from ..runs.saved_models import made_by, model_dtype, save_model

        cfg = self.config
        fields = made_by(made_with="edit", model=cfg.model, method=cfg.method, editor=editor, data=cfg.data, n=cfg.n,
                         records=self._records, seed=cfg.seed, batch_size=cfg.batch_size,
                         dtype=model_dtype(loaded.model),
                         options={"sample": None, "negation_table": cfg.negation_table, "zsre_target": cfg.zsre_target,
                                  "mquake_unit": cfg.mquake_unit})
        save_model(loaded.model, loaded.tokenizer, cfg.save_model, fields)

    def _write_result(self, editor, report: dict[str, Any]) -> None:
        """Stage state/ and report.json complete, then rename them into place, report.json
        last; an earlier result's entries go (a user's own files stay, named)."""
        out = self._work.root
        try:
            staged = Path(tempfile.mkdtemp(prefix=f".result{TMP_INFIX}", dir=out))
            try:
                editor.save_state(staged / STATE)
                write_json_atomic(staged / REPORT, report)
                (out / REPORT).unlink(missing_ok=True)  # from here on, no report.json until the new one
                move_into_place(staged / STATE, out / STATE)
                os.replace(staged / REPORT, out / REPORT)
            finally:
                shutil.rmtree(staged, ignore_errors=True)
        except OutputError as exc:  # name the user's --out, not the staging directory
            raise OutputError(f"--out {self.config.out}: cannot write: {exc.reason}; nothing was written") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise OutputError(f"--out {self.config.out}: cannot write: {reason}; nothing was written", reason) from None
        self._work.warn_foreign()


def efficacy_intervals(before: list[bool], after: list[bool]) -> dict[str, Any]:
    """The 95% intervals of the edit report (docs/statistics.md): Wilson for efficacy before and
    after, the paired bootstrap (the same records drawn for both) for the change."""
    from ..probes.intervals import paired, settings, wilson

    per_record = {"before": {str(i): float(x) for i, x in enumerate(before)},
                  "after": {str(i): float(x) for i, x in enumerate(after)}}
    return {"efficacy_before_interval": wilson(sum(before), len(before)),
            "efficacy_after_interval": wilson(sum(after), len(after)),
            "efficacy_change_interval": paired(per_record, lambda m: m["after"] - m["before"]),
            "intervals": settings()}
