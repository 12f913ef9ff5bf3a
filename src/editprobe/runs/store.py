"""The run directory: where a run's config, checkpoints, stage results and final results
live, and the rules that keep it trustworthy.

Layout::

    OUT/config.json                 the RunConfig (written once, checked on --resume)
    OUT/progress.json               batches done and per-batch timings of the stage in flight
    OUT/checkpoints/<stage>/        editor.save_state after the latest batch of that stage
    OUT/stages/<stage>.json         a finished stage's results (baseline, or one edited model)
    OUT/samples.jsonl               every scored query, written when the run finishes
    OUT/records.jsonl               every metric's per-record values (runs/records.py), likewise
    OUT/summary.json                config, versions, metrics, timings: the run is finished

Every file is written atomically. A finished run (summary.json present) is never rewritten.
The directory is an editprobe ``run`` directory (workdir.py): its marker is written first,
a foreign directory is refused before any work, and a running job holds its lock.
"""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..jsontext import finite
from ..locks import Holder
from ..paths import read_json_object, write_json_atomic, write_text_atomic
from ..workdir import ForeignDirectoryError, WorkDir
from ..data.options import ZSRE_TARGET_BEFORE
from .config import RUN_LAYOUT, RUN_LAYOUT_KEY, RunConfig, may_hold_zsre
from .records import RECORDS

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"


class RunExistsError(UserError, FileExistsError):
    pass


class RunDirError(UserError, ValueError):
    """A run directory that cannot be opened as asked (nothing to resume, unreadable config)."""


class RunFailedError(UserError):
    """A run that failed after saving work; the message says how to continue it."""


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("editprobe", "torch", "transformers", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


class RunDir:
    """Opens, checks, resets and finishes one run directory. Its rules: a finished run is
    never rewritten; an unfinished run with work in it continues only with ``resume`` under
    the same config; a directory left with a config but no work (a run that failed or was
    killed before its first result) is no obstacle to a new run; anything else already
    there is not ours to touch. ``open`` takes the directory's lock; ``close`` (or the
    process's end) releases it."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.work = WorkDir(self.root, "run")
        self._created = False

    # --- what is here ---------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def finished(self) -> bool:
        return (self.root / SUMMARY).is_file()

    @property
    def has_config(self) -> bool:
        """A run's config here (a directory editprobe made as a run, with its config.json);
        a config.json in any other directory (a model's) is not a run's."""
        return self.config_path.is_file() and self.work.state() in ("ours", "legacy")

    def holder(self) -> Holder | None:
        """The process running this run now, if any."""
        return self.work.holder()

    @property
    def has_work(self) -> bool:
        """Results a resume would keep: a stage result or a checkpoint."""
        for sub in ("stages", "checkpoints"):
            folder = self.root / sub
            if folder.is_dir() and any(not p.name.startswith(".") for p in folder.iterdir()):
                return True
        return False

    def saved_fields(self) -> dict[str, Any]:
        """The config saved by the run here (to resume it without restating it)."""
        self.check_location()
        if self.finished:
            raise RunExistsError(f"{self.root} holds a finished run (summary.json); choose a new out dir")
        if not self.has_config:
            raise RunDirError(f"{self.root}: no run to resume here (no config.json); drop --resume to start a new run")
        try:
            fields = read_json_object(self.config_path)
        except ValueError as exc:
            raise RunDirError(f"{self.config_path}: unreadable ({exc}); the run cannot be resumed: remove {self.root} "
                              "to start over") from None
        layout = fields.pop(RUN_LAYOUT_KEY, 0)
        fields = read_as_now(fields)
        if layout != RUN_LAYOUT:
            raise RunDirError(f"{self.root}: this run was started by an editprobe whose run directories have layout "
                              f"{layout} (this one writes {RUN_LAYOUT}: probes as plug-ins); it cannot be resumed here: "
                              "finish it with that version, or start over in a new --out")
        return fields

    def matches(self, config: RunConfig) -> bool:
        """Whether the finished run here was made under ``config`` (out dir aside)."""
        saved = read_as_now(read_summary(self.root)["config"])
        try:
            return RunConfig.model_validate(saved).identity() == config.identity()
        except ValueError:
            return False

    # --- opening --------------------------------------------------------------------------------
    def check_location(self) -> None:
        """Refuse a --out that is a file, or a directory editprobe did not make as a run."""
        if self.root.exists() and not self.root.is_dir():
            raise RunExistsError(f"--out {self.root}: is a file, not a directory")
        try:
            self.work.check()
        except ForeignDirectoryError as exc:
            raise RunExistsError(str(exc)) from None

    def check(self, config: RunConfig, resume: bool) -> None:
        """Every rule of :meth:`open`, without writing anything."""
        self.check_location()
        if self.finished:
            raise RunExistsError(f"{self.root} holds a finished run (summary.json); choose a new out dir")
        if resume:
            saved = {**self.saved_fields(), RUN_LAYOUT_KEY: RUN_LAYOUT}
            if saved != config.identity():
                ident = config.identity()
                diff = sorted(k for k in set(saved) | set(ident) if saved.get(k) != ident.get(k))
                raise RunExistsError(f"{self.root}: cannot resume under another config (differs in {', '.join(diff)})")
        elif self.has_config and self.has_work:
            raise RunExistsError(f"{self.root} holds an unfinished run; pass --resume to continue it "
                                 "or choose a new out dir")

    def open(self, config: RunConfig, resume: bool) -> None:
        """Start a new run here, or (``resume``) continue the one already here under the same
        config, holding the directory's lock until :meth:`close`. A finished run is refused
        either way: results are never silently replaced."""
        self.check(config, resume)
        if not self.work.locked:
            self._created = not self.root.exists()
            self.work.acquire()  # the marker first; a swap a kill interrupted is completed
            try:
                self.check(config, resume)  # as it is now that no other process can change it
            except BaseException:
                self.close()
                raise
        if resume and self.has_work:
            return
        for leftover in ("progress.json",):  # of a run that left no work: start clean
            (self.root / leftover).unlink(missing_ok=True)
        write_json_atomic(self.config_path, config.identity())

    def close(self) -> None:
        """Release the directory's lock (the process's end releases it too)."""
        self.work.release()

    def abandon(self) -> None:
        """After a failure: a directory with no work in it goes back to how it was found
        (removed if this open created it), so it never blocks the next run."""
        if self.finished or self.has_work or not self.work.is_ours:
            return
        for name in ("config.json", "progress.json"):
            (self.root / name).unlink(missing_ok=True)
        for sub in ("stages", "checkpoints"):
            shutil.rmtree(self.root / sub, ignore_errors=True)
        if self._created:
            self.close()
            self.work.remove_if_unused()

    def reset(self) -> None:
        """Delete the run here (finished or not) to start over: only what editprobe wrote
        (the marker's entries); a user's own files are kept and named. Refuses a directory
        that is not a run's, and a run another process is running."""
        if not self.root.exists():
            return
        self.check_location()
        if self.work.state() == "empty":
            return
        with self.work.hold():
            self.work.clear()

    # --- stages ---------------------------------------------------------------------------------
    def stage_path(self, stage: str) -> Path:
        return self.root / "stages" / f"{stage}.json"

    def checkpoint(self, stage: str) -> Path:
        return self.root / "checkpoints" / stage

    def load_stage(self, stage: str) -> dict[str, Any] | None:
        path = self.stage_path(stage)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_stage(self, stage: str, result: dict[str, Any]) -> None:
        write_json_atomic(self.stage_path(stage), result)
        # The stage's result supersedes its checkpoint; deltas of big models are large.
        shutil.rmtree(self.checkpoint(stage), ignore_errors=True)

    def batches_checkpointed(self, stage: str) -> int:
        """Batches held by the stage's checkpoint: the editor state's own count is the truth
        (progress.json is written after it and may lag by one batch after a kill)."""
        state = self.checkpoint(stage) / "state.json"
        return int(json.loads(state.read_text())["batches"]) if state.is_file() else 0

    def progress(self) -> dict[str, Any]:
        path = self.root / "progress.json"
        return json.loads(path.read_text()) if path.is_file() else {"timings": {}}

    def record_checkpoint(self, stage: str, batch: int, timings: dict[str, float], reports: dict[str, Any]) -> None:
        """After a checkpoint: the stage's batch timings and (deterministic) edit reports so
        far. Written after the editor state, so it may lag it by one checkpoint, never lead."""
        progress = self.progress()
        progress["stage"] = stage
        progress["batches_done"] = batch + 1
        progress["timings"][stage] = timings
        progress.setdefault("reports", {})[stage] = reports
        write_json_atomic(self.root / "progress.json", progress)

    # --- finishing ------------------------------------------------------------------------------
    def finish(self, summary: dict[str, Any], samples: list[dict[str, Any]],
               records: list[dict[str, Any]] | None = None) -> None:
        """Samples and per-record values (runs/records.py) first, summary last: summary.json
        is the mark of a finished run."""
        self._write_lines(SAMPLES, samples)
        if records is not None:
            self._write_lines(RECORDS, records)
        write_json_atomic(self.root / SUMMARY, summary)
        shutil.rmtree(self.root / "checkpoints", ignore_errors=True)

    def _write_lines(self, name: str, lines: list[dict[str, Any]]) -> None:
        rows = finite(lines, self.root / name)  # a field's path starts with its line number - 1
        write_text_atomic(self.root / name, "".join(json.dumps(s, ensure_ascii=False, allow_nan=False) + "\n"
                                                    for s in rows))


def read_as_now(fields: dict[str, Any]) -> dict[str, Any]:
    """A config saved by an earlier version, with the values it ran under for fields added
    since: saved before zsRE's target was an option, its zsRE records were edited toward alt."""
    if "zsre_target" not in fields and may_hold_zsre(fields.get("datasets") or ()):
        return {**fields, "zsre_target": ZSRE_TARGET_BEFORE}
    return fields


def read_summary(root: str | Path) -> dict[str, Any]:
    path = Path(root) / SUMMARY
    if not path.is_file():
        raise RunDirError(f"{root}: no {SUMMARY} (not a run directory, or the run is unfinished)")
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from None


def read_samples(root: str | Path) -> list[dict[str, Any]]:
    path = Path(root) / SAMPLES
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
