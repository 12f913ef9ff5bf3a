"""Shared pieces of the run tests (test_runs_*.py): a trained tiny model saved to a local
directory (the session's, tiny_trained.py), a CounterFact-style file of its facts, a negation
table for its verb-less templates, a corpus file. No tests live here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from kill_driver import command
from tiny_trained import save_workspace

from editprobe.models.tiny import tiny_facts
from editprobe.runs import RunConfig

# The tiny facts' templates have no verb, so no rule negates them: a user table does
# (docs/protocol.md#negating-a-template).
NEGATIONS = {"The mother tongue of {}": "Not the mother tongue of {}",
             "The birthplace of {}": "Never the birthplace of {}"}


def counterfact_records(n: int) -> list[dict]:
    facts = [f for f in tiny_facts(0) if f[0] in NEGATIONS]
    objects = {t: sorted({o for tt, _, o in tiny_facts(0) if tt == t}) for t in NEGATIONS}
    out = []
    for i, (template, subject, obj) in enumerate(facts[:n]):
        new = next(o for o in objects[template] if o != obj)
        out.append({"case_id": i, "requested_rewrite": {
            "prompt": template, "subject": subject, "relation_id": None,
            "target_new": {"str": new}, "target_true": {"str": obj}},
            "paraphrase_prompts": [], "neighborhood_prompts": []})
    return out


def workspace(root: Path, n: int = 6) -> dict[str, Path]:
    """Model dir, dataset, negation table and corpus under ``root`` (built once per root)."""
    torch.set_num_threads(1)
    paths = {"model": root / "model", "data": root / "cf.json", "negations": root / "neg.yaml",
             "corpus": root / "corpus.txt"}
    if not paths["model"].is_dir():
        save_workspace(root)
        paths["data"].write_text(json.dumps(counterfact_records(n)))
        paths["negations"].write_text("".join(f'"{k}": "{v}"\n' for k, v in NEGATIONS.items()))
    return paths


def subprocess_env(root: Path) -> dict[str, str]:
    """The environment of a CLI subprocess: the workspace's stats cache, one thread, and
    this folder importable (kill_driver.py)."""
    here = str(Path(__file__).parent)
    return {**os.environ, "EDITPROBE_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1",
            "PYTHONPATH": os.pathsep.join([here, os.environ.get("PYTHONPATH", "")])}


def config(ws: dict[str, Path], out: Path, **fields) -> RunConfig:
    base = dict(model=str(ws["model"]), methods=("memit",), datasets=(str(ws["data"]),), n=6, batch_size=3,
                out=out, hparams="tiny", overrides={"mom2_corpus": str(ws["corpus"])},
                negation_table=str(ws["negations"]), seed=0)
    return RunConfig.build({**base, **fields})


def comparable(summary: dict) -> dict:
    """A summary without what may differ between equal runs: timings, the out dir."""
    out = {k: v for k, v in summary.items() if k != "timings"}
    out["config"] = {k: v for k, v in summary["config"].items() if k != "out"}
    return out


def cli_run(ws: dict[str, Path], out: Path, env: dict[str, str], methods, *extra: str, probes=(), mom2: bool = True,
            kill: str | None = None) -> subprocess.CompletedProcess:
    """``editprobe run`` of ``methods`` on the workspace's 6 records in batches of 3 (tiny settings,
    seed 0, one thread) in a subprocess; ``kill``: the kill driver's point to stop it at."""
    cli = command(kill, []) if kill else [sys.executable, "-m", "editprobe"]
    args = [*cli, "run", "--model", str(ws["model"]), *[a for m in methods for a in ("--method", m)],
            *[a for p in probes for a in ("--probe", p)],
            "--data", str(ws["data"]), "--n", "6", "--batch-size", "3", "--out", str(out), "--hparams", "tiny",
            *(["--set", f"mom2_corpus={ws['corpus']}"] if mom2 else []), "--negation-table", str(ws["negations"]),
            "--seed", "0", "--threads", "1", *extra]
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=900)
