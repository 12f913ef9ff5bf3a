"""The harness of the failure tests (test_failures_*.py): every failure a new user can cause
ends in one clear line, before any work, with nothing left behind — table-driven, through
the real command line (``editprobe.cli.main``) in-process. No tests live here.

For each case (:func:`check_case`): the exit code; stderr is exactly one ``error: ...`` line
naming the culprit (plus, for runs, the data warnings); no traceback anywhere; the output
location is as it was before (absent, or byte-for-byte unchanged); and where a case leaves
state behind, the next run works. The kills (SIGKILL at chosen points) are in
test_failures_kill.py.
"""

from __future__ import annotations

import errno
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import torch
from cli_helpers import invoke
from test_runs_helpers import counterfact_records, workspace

Args = Callable[[dict, Path], list[str]]


# --- the workspace: a trained tiny model, its facts, a corpus -------------------------------------


@pytest.fixture(scope="module")
def ws(failure_workspace):
    """The session's failure workspace, its statistics cache set for the module."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(failure_workspace["root"] / "cache"))
        yield failure_workspace


def edit_args(ws: dict, out: Path, *extra: str, data: Path | None = None, n: int = 2) -> list[str]:
    """``edit`` of ``n`` tiny records in batches of 2 into ``out``."""
    return ["edit", "--model", str(ws["model"]), "--method", "memit", "--data", str(data or ws["data"]),
            "--n", str(n), "--batch-size", "2", "--out", str(out), "--hparams", "tiny",
            "--set", f"mom2_corpus={ws['corpus']}", "--threads", "1", *extra]


def run_args(ws: dict, out: Path, *extra: str, data: Path | None = None, n: int = 2) -> list[str]:
    """``run`` of ``n`` tiny records in batches of 2 into ``out``."""
    return ["run", "--model", str(ws["model"]), "--method", "memit", "--data", str(data or ws["data"]),
            "--n", str(n), "--batch-size", "2", "--out", str(out), "--hparams", "tiny",
            "--set", f"mom2_corpus={ws['corpus']}", "--negation-table", str(ws["negations"]), "--threads", "1",
            *extra]


def without(args: list[str], option: str) -> list[str]:
    """``args`` less ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2:]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def fact_records(n: int = 6, **change) -> list[dict]:
    """The tiny facts as CounterFact records; ``change={index: fn(record)}`` edits some."""
    records = counterfact_records(n)
    for index, fn in change.get("fix", {}).items():
        fn(records[index])
    return records


def data_file(tmp: Path, records) -> Path:
    return write(tmp / "bad.json", json.dumps(records))


def drop(field_name: str):
    return lambda r: r["requested_rewrite"].pop(field_name)


def model_dir(tmp: Path, config: str | None) -> Path:
    d = tmp / "model"
    d.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (d / "config.json").write_text(config)
    return d


def finished_run(ws: dict, tmp: Path) -> Path:
    out = tmp / "finished"
    result = invoke(run_args(ws, out))
    assert result.exit_code == 0, result.output
    return out


def hparams_file(tmp: Path, text: str) -> Path:
    return write(tmp / "hp.yaml", text)


# --- the cases --------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    args: Args
    expect: tuple[str, ...]  # substrings of the one error line
    code: int = 2
    out: Callable[[Path], Path] = lambda tmp: tmp / "out"  # the location that must stay as it was
    setup: Callable[[dict, Path], None] | None = None
    inject: Callable[[pytest.MonkeyPatch], None] | None = None
    env: dict = field(default_factory=dict)
    then: Args | None = None  # the next run, which must work

    @property
    def during_work(self) -> bool:
        """Found while working (a fault, a bug): status lines may precede the error line."""
        return self.id.startswith(("numeric-", "disk-full-", "bug-"))


def enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def safetensors_enospc(*_a, **_k):
    """What safetensors' save_file raises on a full disk: not an OSError, but its Rust I/O
    error with the errno in the text (the same text as the EFBIG that test_failures_disk.py
    provokes for real, with ENOSPC's code: a full file system needs a mount)."""
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def inject_enospc_on_state(mp: pytest.MonkeyPatch) -> None:
    import editprobe.editing.lte.state as state

    mp.setattr(state, "save_file", safetensors_enospc)


def safetensors_enospc(*_a, **_k):
    """What safetensors' save_file raises when the disk fills (not an OSError)."""
    from safetensors import SafetensorError

    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def inject_enospc_on_covariance(mp: pytest.MonkeyPatch) -> None:
    import editprobe.editing.lte.stats_store as store

    mp.setattr(store, "save_file", safetensors_enospc)


def enospc_on_stage_write(mp: pytest.MonkeyPatch, nth: int) -> None:
    """The disk fills when the nth stage result is renamed into place (the last step of
    every atomic write)."""
    import editprobe.paths as paths

    original, calls = paths.os.replace, {"n": 0}

    def replace(src, dst):
        if Path(dst).parent.name == "stages":
            calls["n"] += 1
            if calls["n"] >= nth:
                enospc()
        return original(src, dst)

    mp.setattr(paths.os, "replace", replace)


def inject_enospc_on_stage(mp: pytest.MonkeyPatch) -> None:
    enospc_on_stage_write(mp, 2)  # the baseline is saved, the first edited model's result is not


def inject_enospc_on_first_stage(mp: pytest.MonkeyPatch) -> None:
    enospc_on_stage_write(mp, 1)


def inject_bug(mp: pytest.MonkeyPatch) -> None:
    import editprobe.probes.exact as exact

    def broken(*_a, **_k):
        raise RuntimeError("an injected bug")

    mp.setattr(exact, "exact_match_batch", broken)


def inject_bug_in_run(mp: pytest.MonkeyPatch) -> None:
    from editprobe.probes.builtin.negation import NegationProbe

    def broken(*_a, **_k):
        raise RuntimeError("an injected bug")

    mp.setattr(NegationProbe, "measure", broken)


def inject_unreachable_hub(mp: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(self, repo_id, **kwargs):
        assert kwargs.get("timeout") is not None and kwargs["timeout"] <= 10  # fails within seconds
        raise ConnectionError("Name or service not known")

    mp.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    mp.setattr(huggingface_hub.HfApi, "model_info", unreachable)


def inject_missing_hub_repo(mp: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(self, repo_id, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404 Repository Not Found")
        raise error

    mp.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    mp.setattr(huggingface_hub.HfApi, "model_info", missing)


def earlier_edit_result(ws: dict, tmp: Path) -> None:
    result = invoke(edit_args(ws, tmp / "out"))
    assert result.exit_code == 0, result.output


def marked(directory: Path, kind: str = "run") -> Path:
    """``directory`` made an editprobe directory of ``kind`` (its marker, as a job writes it
    first), holding nothing else yet."""
    from editprobe.workdir import WorkDir

    work = WorkDir(directory, kind)
    work.acquire()
    work.release()
    return directory


def stub_run_dir(ws: dict, tmp: Path) -> None:
    """A run directory that got as far as its config, then failed: a plain rerun must work."""
    out = marked(tmp / "out")
    (out / "config.json").write_text("{}")


HAS_CUDA = torch.cuda.is_available()


def snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


def parametrize(cases: list[Case]):
    """``@parametrize(CASES)`` over a module's cases, named by their ids."""
    if torch.cuda.is_available():  # on a CUDA machine these are not failures
        cases = [c for c in cases if "cuda-without-cuda" not in c.id]
    return pytest.mark.parametrize("case", cases, ids=[c.id for c in cases])


def check_case(case: Case, ws, tmp_path, monkeypatch) -> None:
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.setup is not None:
        case.setup(ws, tmp_path)
    args = case.args(ws, tmp_path)
    watched = case.out(tmp_path)
    before = snapshot(watched)
    with pytest.MonkeyPatch.context() as mp:
        if case.inject is not None:
            case.inject(mp)
        started = time.perf_counter()
        result = invoke(args)
        elapsed = time.perf_counter() - started

    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("warning:")]
    if case.during_work:  # progress and status lines came before; the error is still one line
        lines = [line for line in lines if line.startswith("error")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    print(f"{case.id}: exit {result.exit_code}: {lines[0]}")  # the list of messages, with -s
    for text in case.expect:
        assert text in lines[0], lines[0]
    assert snapshot(watched) == before, f"{watched} changed"
    assert elapsed < 60
    if case.then is not None:
        again = invoke(case.then(ws, tmp_path))
        assert again.exit_code == 0, again.output
