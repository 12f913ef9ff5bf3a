"""The ``evaluate`` job: an edited model made elsewhere (or saved by ``edit --save-model`` or a
run's ``save_model``), measured against its original on the records it was edited with.

It is a run (runs/loop.py) of one method, ``external`` (editing/external.py): the original
model is loaded and measured first (the baseline), then the checkpoint's weights are written
into it, tensor by tensor, for the positive stage's probes, and put back. So its directory
is a run directory that ``report`` reads beside editprobe's own runs (docs/evaluate.md).
When the checkpoint has editprobe's sidecar (``editprobe-edit.json``), the original model,
records, n, dtype and the options that read the records default to the ones it was made
with, and records given that differ from them are refused in one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import OptionError, UserError, validation_message
from ..runs.config import Count, DType
from ..runs.loop import Experiment

# The sidecar's fields that say how the records were read, as the run config names them.
READ_AS = ("negation_table", "zsre_target", "mquake_unit", "sample", "seed")


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    edited: str  # the edited checkpoint: a directory or a hub id
    original: str | None = None  # None: the one the sidecar names
    data: str | None = None  # None: the sidecar's
    n: Count | None = None  # None: the sidecar's, else 100
    probes: tuple[str, ...] = ()  # empty: every default probe, where it applies
    out: Path
    label: str | None = None  # None: the checkpoint's directory (or repository) name
    dtype: DType = None  # None: the sidecar's, else the checkpoint config's
    device: str | None = None
    negation_table: str | None = None
    trust_remote_code: bool = False  # for the original model's own code; never on unless asked
    on_bad_record: Literal["error", "skip"] = "error"

    @classmethod
    def build(cls, fields: dict[str, Any]) -> "EvaluateConfig":
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            where, message = validation_message(exc)
            raise OptionError(f"--{where.replace('_', '-')}: {message}") from None


class _Evaluation(Experiment):
    """A run whose original model may need its own code (``--trust-remote-code``)."""

    trust_remote_code = False

    @property
    def loaded(self):
        if self._loaded is None:
            from ..models import load_model

            self._loaded = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device,
                                      trust_remote_code=self.trust_remote_code)
        return self._loaded


class EvaluateJob:
    """``EvaluateJob(config).preflight(resume)`` (no model loaded, nothing written), then ``.run()``."""

    def __init__(self, config: EvaluateConfig) -> None:
        self.config = config
        self.experiment: _Evaluation | None = None
        self.sidecar: dict[str, Any] | None = None

    def preflight(self, resume: bool = False) -> list[str]:
        from ..editing.external import SETTINGS_FILE
        from ..models.checkpoint import (check_same_structure, checkpoint_dtype, fingerprint, read_config,
                                         read_sidecar, resolve_checkpoint)
        from ..runs.config import RunConfig
        from ..runs.plan import RunPlan

        cfg = self.config
        path = resolve_checkpoint(cfg.edited)
        self.sidecar = sidecar = read_sidecar(path) or {}
        original = _given_or_saved(cfg.original, sidecar, "original_model", "--original")
        data = _given_or_saved(cfg.data, sidecar, "data", "--data")
        warnings: list[str] = []
        if sidecar.get("original_model") not in (None, original):
            warnings.append(f"--original {original}: the checkpoint says it is an edit of {sidecar['original_model']}")
        original_config = _original_config(original)
        if original_config is not None:
            check_same_structure(read_config(path), original_config, f"--edited {cfg.edited}")
        printed = fingerprint(path)
        if sidecar.get("fingerprint") not in (None, printed):
            warnings.append(f"--edited {cfg.edited}: its files changed since editprobe saved it (fingerprint "
                            f"{printed[:12]}, saved as {sidecar['fingerprint'][:12]})")
        n = cfg.n or sidecar.get("n") or 100
        fields: dict[str, Any] = {
            "model": original, "methods": ("external",), "datasets": (data,), "n": n, "batch_size": n, "out": cfg.out,
            "hparams": str(SETTINGS_FILE), "dtype": cfg.dtype or sidecar.get("dtype") or checkpoint_dtype(path),
            "device": cfg.device, "on_bad_record": cfg.on_bad_record,
            "overrides": {"checkpoint": str(path.resolve()), "label": cfg.label or _label(cfg.edited, path),
                          "fingerprint": printed},
            **{k: sidecar[k] for k in READ_AS if sidecar.get(k) is not None}}
        if cfg.negation_table is not None:
            fields["negation_table"] = cfg.negation_table
        if cfg.probes:
            fields["probes"] = cfg.probes
        run = RunConfig.build(fields)
        self.experiment = _Evaluation(RunPlan.build(run))
        self.experiment.trust_remote_code = cfg.trust_remote_code
        warnings += self.experiment.preflight(resume)
        if sidecar.get("records") is not None:
            check_same_records(sidecar, [r.id for r in self.experiment.plan.datasets[0].records], data, n)
        return warnings

    def run(self, resume: bool = False):
        """The run's :class:`~editprobe.runs.summary.RunSummary`."""
        if self.experiment is None:
            self.preflight(resume)
        assert self.experiment is not None
        return self.experiment.run(resume=resume)


def _given_or_saved(given: str | None, sidecar: dict[str, Any], key: str, option: str) -> str:
    if given is not None:
        return given
    if sidecar.get(key):
        return str(sidecar[key])
    raise OptionError(f"{option} is required: the checkpoint has no editprobe-edit.json saying which it was made with")


def _label(ref: str, path: Path) -> str:
    """The checkpoint's name: its directory's, or its repository's (a hub id)."""
    return Path(ref).expanduser().name if Path(ref).expanduser().is_dir() else ref.rstrip("/").split("/")[-1] or path.name


def _original_config(original: str) -> dict[str, Any] | None:
    """The original model's config.json when it can be read without downloading weights
    (None: a hub id not cached yet; the tensor check after loading still applies)."""
    from ..models.checkpoint import read_config
    from ..models.reference import resolve_model_reference

    ref = resolve_model_reference(original)
    if ref.kind == "builtin":
        from ..models.builtin import pull

        return read_config(pull(original))
    if ref.kind == "local":
        return read_config(Path(original).expanduser())
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(original, "config.json")
    return read_config(Path(cached).parent) if isinstance(cached, str) else None


def check_same_records(sidecar: dict[str, Any], ids: list[str], data: str, n: int) -> None:
    """The records given are the ones the checkpoint was edited with, in the same order."""
    saved = [str(i) for i in sidecar["records"]]
    if ids == saved:
        return
    at = next((k for k, (a, b) in enumerate(zip(ids, saved)) if a != b), min(len(ids), len(saved)))
    got = f"record {ids[at]!r}" if at < len(ids) else "no record"
    raise UserError(f"--data {data} --n {n}: not the records the checkpoint was edited with ({len(saved)} records, "
                    f"from {sidecar.get('data')}; at position {at + 1} it has {saved[at] if at < len(saved) else 'none'!r}, "
                    f"these {got}); give its --data and --n, or drop them")
