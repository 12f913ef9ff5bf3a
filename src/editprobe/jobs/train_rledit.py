"""``editprobe train rledit``: train RLEdit's hypernetwork for a model on edit records that
share no subject and no prompt with the evaluation data, with checkpoints and ``--resume``.

OUT/config.json    what identifies the training (a resume must match it)
OUT/checkpoint/    the latest training checkpoint (editing/rledit/loop.py)
OUT/hypernet/      the trained hypernetwork (safetensors + JSON), written at the end
OUT/training.json  records used and dropped, settings, losses per step, seconds

OUT is an editprobe ``train`` directory (workdir.py), locked while training runs. A plain
run starts over in a directory that holds no checkpoint yet (one killed before its first);
``--resume`` continues from the checkpoint, or starts from the beginning when there is none.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# DEFAULT_EXCLUDE: the built-in evaluation samples, whose subjects and prompts training never sees.
from ..editing.rledit.store import DEFAULT_DATA, DEFAULT_EXCLUDE
from ..errors import EditprobeWarning, OptionError, OutputError, UserError, validation_message
from ..paths import OLD_SUFFIX, read_json_object, write_json_atomic
from ..workdir import WorkDir
from ..runs.config import Count, DType
from ..runs.preflight import check_datasets, check_model_and_device


class TrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    data: tuple[str, ...] = DEFAULT_DATA
    out: Path
    settings: str | None = None  # model key or YAML of RLEdit settings; None: the model's shipped file
    setting: str | None = None  # a named setting of that file (reduced, reference)
    overrides: dict[str, Any] = Field(default_factory=dict)
    exclude: tuple[str, ...] = DEFAULT_EXCLUDE
    dtype: DType = None
    device: str | None = None
    checkpoint_every: Count = 1

    @classmethod
    def build(cls, fields: dict[str, Any]) -> "TrainConfig":
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            where, message = validation_message(exc)
            raise OptionError(f"--{where.replace('_', '-')}: {message}") from None

    def identity(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"out", "device", "checkpoint_every"})


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def disjoint_records(records: list, excluded: list) -> tuple[list, int]:
    """The records whose subject and prompt (with the subject) appear in none of ``excluded``."""
    subjects = {_key(r.subject) for r in excluded}
    prompts = {_key(r.query) for r in excluded}
    kept = [r for r in records if _key(r.subject) not in subjects and _key(r.query) not in prompts]
    return kept, len(records) - len(kept)


class TrainJob:
    """``TrainJob(config).preflight(resume)`` (no model loaded, nothing written), then
    ``.run(resume)`` (a :class:`~editprobe.runs.plan.Job`)."""

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.settings = None
        self.records: list = []
        self.n_dropped = 0

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    def preflight(self, resume: bool) -> list[str]:
        """Settings, records (disjoint from the excluded data, enough for the sequence), the
        output directory, the model reference and the device: before any model is loaded."""
        from ..editing.settings.model_keys import hparams_key
        from ..editing.rledit.hypernet import resolve_settings

        cfg = self.config
        self.settings = resolve_settings(cfg.settings or hparams_key(cfg.model), cfg.setting, cfg.overrides)
        self._check_out(resume)
        loaded, warnings = check_datasets(cfg.data, None)
        records = [r for spec in cfg.data for r in loaded[spec]]
        excluded = [r for recs in check_datasets(cfg.exclude, None)[0].values() for r in recs] if cfg.exclude else []
        self.records, self.n_dropped = disjoint_records(records, excluded)
        need = self.settings.n_steps * self.settings.batch_size
        if len(self.records) < need:
            raise UserError(f"--data: {len(self.records)} training records after dropping {self.n_dropped} that share a "
                            f"subject or prompt with {', '.join(cfg.exclude) or 'nothing'}; the setting needs "
                            f"{need} ({self.settings.n_steps} batches of {self.settings.batch_size})")
        self.records = self.records[:need]
        check_model_and_device(cfg.model, cfg.device)
        return warnings

    @property
    def has_checkpoint(self) -> bool:
        """A training checkpoint here (or one a kill left between the renames of its swap,
        which opening the directory completes)."""
        return (self.out / "checkpoint" / "progress.json").is_file() or (self.out / f".checkpoint{OLD_SUFFIX}").is_dir()

    def checkpoint_step(self, resume: bool) -> int:
        """The batches a ``--resume`` starts past (0 when it starts from the beginning): a
        progress line's ETA counts only the batches this process trains."""
        if not resume:
            return 0
        try:
            return int(read_json_object(self.out / "checkpoint" / "progress.json").get("step", 0))
        except (ValueError, TypeError):  # no checkpoint yet, or one mid-swap: the run says so itself
            return 0

    def _check_out(self, resume: bool) -> None:
        self.work = WorkDir(self.out, "train")
        self.work.check()
        if (self.out / "hypernet" / "hypernet.json").is_file():
            raise OutputError(f"--out {self.out}: holds a trained hypernetwork; choose a new --out")
        if resume:
            try:
                saved = read_json_object(self.out / "config.json")
            except ValueError:
                raise OutputError(f"--out {self.out}: no training to resume here (no config.json); drop --resume "
                                  "to start one") from None
            if saved != self.config.identity():
                raise OutputError(f"--out {self.out}: cannot resume under other options")
        elif self.has_checkpoint:
            raise OutputError(f"--out {self.out}: holds a training checkpoint; pass --resume to continue it, or "
                              "choose a new --out")

    def run(self, resume: bool = False, on_step: Callable[[int, int, dict[str, float]], None] | None = None
            ) -> dict[str, Any]:
        if self.settings is None:
            self.preflight(resume)
        with self.work.hold():  # the marker first, the lock for the training's life
            return self._run(resume, on_step)

    def _run(self, resume: bool, on_step) -> dict[str, Any]:
        from ..editing.lte.covariance import model_fingerprint
        from ..editing.rledit import Hypernetwork, RLEditEditor, TrainingRun, edit_modules, examples_from_records
        from ..editing.rledit import module_shapes
        from ..models import load_model

        cfg = self.config
        if resume and not self.has_checkpoint:
            warnings.warn(EditprobeWarning(f"--out {self.out}: no checkpoint yet (the training stopped before its "
                                           "first); training starts from the beginning"), stacklevel=2)
            resume = False
        if not resume:  # a training that stopped before its first checkpoint: start over
            for name in ("config.json", "training.json"):
                (self.out / name).unlink(missing_ok=True)
        loaded = load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        shapes = module_shapes(edit_modules(loaded.model, loaded.adapter, self.settings))
        editor = RLEditEditor(loaded.model, loaded.tokenizer, Hypernetwork(self.settings, shapes))
        write_json_atomic(self.out / "config.json", cfg.identity())
        started = time.perf_counter()
        history = TrainingRun(editor, examples_from_records(self.records), self.out, cfg.checkpoint_every).run(
            resume=resume, on_step=on_step)
        seconds = time.perf_counter() - started
        info = {"model": cfg.model, "model_fingerprint": model_fingerprint(loaded.model), "data": list(cfg.data),
                "excluded": list(cfg.exclude), "records_used": len(self.records), "records_dropped": self.n_dropped,
                "modules": list(shapes), "settings": self.settings.model_dump(mode="json"),
                "seconds_this_process": round(seconds, 1), "history": history}
        from ..editing.rledit.store import cache_copy, cached_path, training_key

        meta = {"trained_on": info | {"history": None}}
        editor.hypernet.save(self.out / "hypernet", meta=meta)
        # cached for later runs (a run whose hypernet is unset looks up the default training)
        fingerprint = info["model_fingerprint"]
        cached = cached_path(fingerprint, training_key(fingerprint, self.settings, cfg.data, cfg.exclude))
        info["cached"] = str(cached) if cache_copy(editor.hypernet, cached, meta, self.out / "hypernet") else None
        write_json_atomic(self.out / "training.json", info)
        return info
