"""`editprobe study`: a grid of runs from one study file, resumable, with a status per run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import fail


def study(
    source: Path = typer.Argument(..., help="a study file (YAML), or a study directory with --resume/--status"),
    out: Optional[Path] = typer.Option(None, help="the study directory (new, or the one holding this study)"),
    resume: bool = typer.Option(False, "--resume", help="run the study directory's unfinished runs"),
    status: bool = typer.Option(False, "--status", help="print one line per run and stop"),
    backend: str = typer.Option("local", help="a study backend: local (one run after another on this machine), "
                                "ray (one Ray task per run) or a plug-in's (docs/studies.md)"),
    address: Optional[str] = typer.Option(None, help="--backend ray: auto or HOST:PORT of a running Ray "
                                          "cluster (default: start a local one for the study)"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (with ray: of each task)"),
) -> None:
    """Expand a study file into runs and run them (local or Ray backend); --status, --resume."""
    from ..studies.study import StudyDir, expand, is_study_dir, load_study

    backend_cls = _backend(backend, address)
    if threads is not None and threads < 1:
        fail(f"--threads must be at least 1, got {threads}")
    if is_study_dir(source):
        if out is not None and Path(out) != source:
            fail("give either a study file with --out, or a study directory")
        study_dir = StudyDir(source)
        runs = study_dir.runs()
        if not (resume or status):
            fail(f"{source} is a study directory: pass --resume to run its unfinished runs, or --status")
    else:
        if resume or status:
            fail(f"{source}: not a study directory (no study.yaml); give the directory the study was started in")
        if out is None:
            fail("--out is required with a study file")
        study_dir = StudyDir(out)
        runs = None  # the study directory is created after the backend's checks
    if status:
        for line in study_dir.status_lines():
            typer.echo(line)
        return

    def show(run, state: str, error: str) -> None:
        typer.echo(f"{run.name}: {state}" + (f": {error}" if error else ""))

    if runs is None:
        study_dir.check_location()  # a foreign --out fails before the backend starts or anything is written
        expand(load_study(source), Path(out), str(source))  # so does a bad file
    runner = backend_cls(address, threads)  # its own checks (Ray installed, the address answering)
    with runner, study_dir.work.hold():  # the backend up (Ray connected), the directory ours
        runs = runs or study_dir.create(source)
        typer.echo(f"study {study_dir.root}: {len(runs)} runs{runner.label}")
        states = runner.run(study_dir, runs, on_run=show)
    failed = [name for name, state in states.items() if state == "failed"]
    if failed:
        # --resume only where it can help: a failure the settings caused would come again.
        retry = (", --resume retries them" if study_dir.can_retry(failed) else
                 " (their settings or data caused it: --resume would fail the same way)")
        fail(f"{len(failed)} of {len(runs)} runs failed ({', '.join(failed)}); editprobe study {study_dir.root} "
             f"--status shows why{retry}")
    typer.echo(f"all {len(runs)} runs finished; tables: editprobe report {study_dir.root}")


def _backend(name: str, address: str | None):
    """The registered study backend ``name`` (the choices: the registry's), refusing an
    --address it does not take."""
    from ..studies.backends.base import BACKENDS

    if name not in BACKENDS:
        fail(f"--backend {name!r}: choose {_either(list(BACKENDS))}")
    cls = BACKENDS[name]
    if address is not None and cls.address_help is None:
        takers = [f"--backend {n} ({c.address_help})" for n, c in BACKENDS.items() if c.address_help is not None]
        fail(f"--address is for {_either(takers)}" if takers else "--address: no study backend takes one")
    return cls


def _either(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def register(app: typer.Typer) -> None:
    app.command("study")(study)
