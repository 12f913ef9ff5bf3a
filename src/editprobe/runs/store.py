"""The run directory: where a run's config, checkpoints, stage results and final results
live, and the rules that keep it trustworthy.

Layout::

    OUT/config.json                 the RunConfig (written once, checked on --resume)
    OUT/progress.json               batches done and per-batch timings of the stage in flight
    OUT/checkpoints/<stage>/        editor.save_state after the latest batch of that stage
    OUT/stages/<stage>.json         a finished stage's results (baseline, or one edited model)
    OUT/samples.jsonl               every scored query, written when the run finishes
    OUT/summary.json                config, versions, metrics, timings: the run is finished

Every file is written atomically. A finished run (summary.json present) is never rewritten.
"""

from __future__ import annotations

import json
import platform
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

from ..paths import write_json_atomic, write_text_atomic
from .config import RunConfig

SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"


class RunExistsError(FileExistsError):
    pass


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in ("editprobe", "torch", "transformers", "pydantic"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "unknown"
    return out


class RunDir:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    # --- opening --------------------------------------------------------------------------------
    @property
    def finished(self) -> bool:
        return (self.root / SUMMARY).is_file()

    def open(self, config: RunConfig, resume: bool) -> None:
        """Start a new run here, or (``resume``) continue the one already here under the same
        config. A finished run is refused either way: results are never silently replaced."""
        if self.finished:
            raise RunExistsError(f"{self.root} holds a finished run (summary.json); choose a new out dir")
        config_path = self.root / "config.json"
        if config_path.is_file():
            if not resume:
                raise RunExistsError(f"{self.root} holds an unfinished run; pass --resume to continue it "
                                     "or choose a new out dir")
            saved = json.loads(config_path.read_text())
            if saved != config.identity():
                diff = sorted(k for k in set(saved) | set(config.identity()) if saved.get(k) != config.identity().get(k))
                raise RunExistsError(f"{self.root}: cannot resume under another config (differs in {', '.join(diff)})")
            return
        if self.root.exists() and any(self.root.iterdir()):
            raise RunExistsError(f"{self.root} exists and is not a run directory; choose a new out dir")
        write_json_atomic(config_path, config.identity())

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
    def finish(self, summary: dict[str, Any], samples: list[dict[str, Any]]) -> None:
        """Samples first, summary last: summary.json is the mark of a finished run."""
        write_text_atomic(self.root / SAMPLES, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
        write_json_atomic(self.root / SUMMARY, summary)
        shutil.rmtree(self.root / "checkpoints", ignore_errors=True)


def read_summary(root: str | Path) -> dict[str, Any]:
    path = Path(root) / SUMMARY
    if not path.is_file():
        raise FileNotFoundError(f"{root}: no {SUMMARY} (not a run directory, or the run is unfinished)")
    return json.loads(path.read_text())


def read_samples(root: str | Path) -> list[dict[str, Any]]:
    path = Path(root) / SAMPLES
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
