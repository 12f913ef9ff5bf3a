"""Every failure a new user can cause ends in one clear line, before any work, with nothing
left behind — table-driven, through the real command line (``editprobe.cli.main``) in-process.

For each case: the exit code; stderr is exactly one ``error: ...`` line naming the culprit
(plus, for runs, the data warnings); no traceback anywhere; the output location is as it was
before (absent, or byte-for-byte unchanged); and where a case leaves state behind, the next
run works. The kills (SIGKILL at chosen points) are in test_failures_kill.py.
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
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("failures")
    paths = workspace(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        yield paths


def _edit(ws: dict, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    return ["edit", "--model", str(ws["model"]), "--method", "memit", "--data", str(data or ws["data"]),
            "--n", "2", "--batch-size", "2", "--out", str(out), "--hparams", "tiny",
            "--set", f"mom2_corpus={ws['corpus']}", "--threads", "1", *extra]


def _run(ws: dict, out: Path, *extra: str, data: Path | None = None) -> list[str]:
    return ["run", "--model", str(ws["model"]), "--method", "memit", "--data", str(data or ws["data"]),
            "--n", "2", "--batch-size", "2", "--out", str(out), "--hparams", "tiny",
            "--set", f"mom2_corpus={ws['corpus']}", "--negation-table", str(ws["negations"]), "--threads", "1",
            *extra]


def _without(args: list[str], option: str) -> list[str]:
    """``args`` less ``option`` and its value."""
    i = args.index(option)
    return args[:i] + args[i + 2:]


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def _records(n: int = 6, **change) -> list[dict]:
    """The tiny facts as CounterFact records; ``change={index: fn(record)}`` edits some."""
    records = counterfact_records(n)
    for index, fn in change.get("fix", {}).items():
        fn(records[index])
    return records


def _data(tmp: Path, records) -> Path:
    return _write(tmp / "bad.json", json.dumps(records))


def _drop(field_name: str):
    return lambda r: r["requested_rewrite"].pop(field_name)


def _model_dir(tmp: Path, config: str | None) -> Path:
    d = tmp / "model"
    d.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (d / "config.json").write_text(config)
    return d


def _finished_run(ws: dict, tmp: Path) -> Path:
    out = tmp / "finished"
    result = invoke(_run(ws, out))
    assert result.exit_code == 0, result.output
    return out


def _hparams_file(tmp: Path, text: str) -> Path:
    return _write(tmp / "hp.yaml", text)


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


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, "No space left on device")


def _inject_enospc_on_state(mp: pytest.MonkeyPatch) -> None:
    import editprobe.editing.state as state

    mp.setattr(state, "save_file", _enospc)


def _inject_enospc_on_covariance(mp: pytest.MonkeyPatch) -> None:
    import editprobe.editing.covariance as cov

    mp.setattr(cov, "save_file", _enospc)


def _enospc_on_stage_write(mp: pytest.MonkeyPatch, nth: int) -> None:
    """The disk fills when the nth stage result is renamed into place (the last step of
    every atomic write)."""
    import editprobe.paths as paths

    original, calls = paths.os.replace, {"n": 0}

    def replace(src, dst):
        if Path(dst).parent.name == "stages":
            calls["n"] += 1
            if calls["n"] >= nth:
                _enospc()
        return original(src, dst)

    mp.setattr(paths.os, "replace", replace)


def _inject_enospc_on_stage(mp: pytest.MonkeyPatch) -> None:
    _enospc_on_stage_write(mp, 2)  # the baseline is saved, the first edited model's result is not


def _inject_enospc_on_first_stage(mp: pytest.MonkeyPatch) -> None:
    _enospc_on_stage_write(mp, 1)


def _inject_bug(mp: pytest.MonkeyPatch) -> None:
    import editprobe.probes.exact as exact

    def broken(*_a, **_k):
        raise RuntimeError("an injected bug")

    mp.setattr(exact, "exact_match_batch", broken)


def _inject_bug_in_run(mp: pytest.MonkeyPatch) -> None:
    from editprobe.probes.builtin.negation import NegationProbe

    def broken(*_a, **_k):
        raise RuntimeError("an injected bug")

    mp.setattr(NegationProbe, "measure", broken)


def _inject_unreachable_hub(mp: pytest.MonkeyPatch) -> None:
    import huggingface_hub

    def unreachable(self, repo_id, **kwargs):
        assert kwargs.get("timeout") is not None and kwargs["timeout"] <= 10  # fails within seconds
        raise ConnectionError("Name or service not known")

    mp.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    mp.setattr(huggingface_hub.HfApi, "model_info", unreachable)


def _inject_missing_hub_repo(mp: pytest.MonkeyPatch) -> None:
    import huggingface_hub
    from huggingface_hub.errors import RepositoryNotFoundError

    def missing(self, repo_id, **kwargs):
        error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
        Exception.__init__(error, "404 Repository Not Found")
        raise error

    mp.setattr(huggingface_hub.constants, "is_offline_mode", lambda: False)
    mp.setattr(huggingface_hub.HfApi, "model_info", missing)


def _earlier_edit_result(ws: dict, tmp: Path) -> None:
    result = invoke(_edit(ws, tmp / "out"))
    assert result.exit_code == 0, result.output


def _stub_run_dir(ws: dict, tmp: Path) -> None:
    """A run directory that got as far as its config, then failed: a plain rerun must work."""
    out = tmp / "out"
    out.mkdir()
    (out / "config.json").write_text("{}")


HAS_CUDA = torch.cuda.is_available()

CASES = [
    # --- data files and records ---
    Case("data-missing-file", lambda ws, t: _edit(ws, t / "out", data=t / "nope.json"),
         ("nope.json", "no such file")),
    Case("data-empty-file", lambda ws, t: _edit(ws, t / "out", data=_write(t / "e.json", "")), ("e.json", "is empty")),
    Case("data-not-json", lambda ws, t: _edit(ws, t / "out", data=_write(t / "x.json", "[{oops")),
         ("x.json", "not valid JSON")),
    Case("data-not-utf8", lambda ws, t: _edit(ws, t / "out", data=_write(t / "b.json", b"[\xff\xfe]")),
         ("b.json", "not UTF-8")),
    Case("data-one-object", lambda ws, t: _edit(ws, t / "out", data=_write(t / "o.json", '{\n  "a": 1\n}')),
         ("o.json", "single JSON object")),
    Case("data-unknown-format", lambda ws, t: _edit(ws, t / "out", data=_write(t / "u.json", '[{"foo": 1}]')),
         ("u.json", "unrecognised dataset format")),
    Case("data-record-missing-field",
         lambda ws, t: _edit(ws, t / "out", data=_data(t, _records(fix={1: _drop("target_new")}))),
         ("bad.json", "record 1", "target_new")),
    Case("run-checks-every-record-not-the-first",
         lambda ws, t: _run(ws, t / "out", "--n", "6", data=_data(t, _records(fix={5: _drop("subject")}))),
         ("bad.json", "record 5", "subject")),
    Case("data-template-without-placeholder",
         lambda ws, t: _edit(ws, t / "out", data=_data(t, _records(
             fix={0: lambda r: r["requested_rewrite"].update(prompt="no placeholder")}))),
         ("bad.json", "record 0", "prompt 'no placeholder'")),
    Case("data-duplicate-ids",
         lambda ws, t: _edit(ws, t / "out", data=_data(t, _records(fix={1: lambda r: r.update(case_id=0)}))),
         ("bad.json", "record 1", "duplicate id")),
    Case("data-builtin-typo", lambda ws, t: _edit(ws, t / "out", data="counterfact-smaple"),  # type: ignore[arg-type]
         ("counterfact-smaple",)),
    # --- options ---
    Case("edit-n-zero", lambda ws, t: _edit(ws, t / "out", "--n", "0"), ("--n", ">= 1")),
    Case("edit-batch-size-zero", lambda ws, t: _edit(ws, t / "out", "--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("run-n-zero", lambda ws, t: _run(ws, t / "out", "--n", "0"), ("'n'", ">= 1")),
    Case("run-batch-size-negative", lambda ws, t: _run(ws, t / "out", "--batch-size", "-1"), ("'batch_size'",)),
    Case("edit-unknown-method", lambda ws, t: _edit(ws, t / "out", "--method", "nope"), ("unknown method 'nope'",)),
    Case("run-unknown-method", lambda ws, t: _run(ws, t / "out", "--method", "nope"), ("unknown method 'nope'",)),
    Case("set-without-equals", lambda ws, t: _edit(ws, t / "out", "--set", "v_lr"), ("--set expects key=value",)),
    Case("set-bad-value", lambda ws, t: _edit(ws, t / "out", "--set", "v_lr=fast"), ("--set v_lr='fast'", "number")),
    Case("set-unknown-field", lambda ws, t: _edit(ws, t / "out", "--set", "v_lrr=0.1"),
         ("--set v_lrr=0.1", "Extra inputs")),
    Case("edit-bad-dtype", lambda ws, t: _edit(ws, t / "out", "--dtype", "float8"), ("--dtype", "unknown dtype 'float8'", "bf16")),
    Case("run-bad-dtype", lambda ws, t: _run(ws, t / "out", "--dtype", "float8"), ("float8", "bf16")),
    Case("threads-zero", lambda ws, t: _edit(ws, t / "out", "--threads", "0"), ("--threads",)),
    Case("unknown-option", lambda ws, t: _edit(ws, t / "out", "--bogus"), ("editprobe edit", "--bogus")),
    Case("unknown-command", lambda ws, t: ["nosuchcommand"], ("nosuchcommand",)),
    Case("hparams-file-missing", lambda ws, t: _edit(ws, t / "out", "--hparams", str(t / "hp.yaml")),
         ("hp.yaml", "cannot read")),
    Case("hparams-yaml-is-a-list",
         lambda ws, t: _edit(ws, t / "out", "--hparams", str(_hparams_file(t, "- layers\n- 1\n"))),
         ("hp.yaml", "mapping")),
    Case("hparams-broken-yaml",
         lambda ws, t: _edit(ws, t / "out", "--hparams", str(_hparams_file(t, "layers: [1, 2\n"))), ("hp.yaml",)),
    Case("hparams-layers-outside-the-model", lambda ws, t: _edit(ws, t / "out", "--set", "layers=[1, 40]"),
         ("layers [40]", "0..3")),
    Case("run-config-missing", lambda ws, t: ["run", "--config", str(t / "run.yaml"), "--out", str(t / "out")],
         ("run.yaml", "cannot read")),
    Case("run-config-is-a-list",
         lambda ws, t: ["run", "--config", str(_write(t / "run.yaml", "- a\n")), "--out", str(t / "out")],
         ("run.yaml", "mapping")),
    Case("run-config-unknown-field",
         lambda ws, t: ["run", "--config", str(_write(t / "run.yaml", "bogus: 1\n")), "--out", str(t / "out")],
         ("'bogus'",)),
    Case("run-without-out", lambda ws, t: ["run", "--model", str(ws["model"])], ("--out is required",)),
    Case("run-negation-table-missing",
         lambda ws, t: [*_run(ws, t / "out"), "--negation-table", str(t / "neg.yaml")], ("neg.yaml",)),
    Case("run-no-record-can-be-negated",  # the tiny data's templates need the negation table
         lambda ws, t: _without(_run(ws, t / "out"), "--negation-table"),
         ("none of its 2 records has a template that can be negated", "--negation-table")),
    Case("numeric-failure-rolls-back", lambda ws, t: _edit(ws, t / "out", "--set", "v_lr=.nan"),
         ("batch 1 of 1", "rolled back")),
    # --- model references ---
    Case("model-missing-local-dir", lambda ws, t: [*_edit(ws, t / "out"), "--model", "./no-such-model-dir"],
         ("'./no-such-model-dir'", "no such directory")),
    Case("model-builtin-typo", lambda ws, t: [*_edit(ws, t / "out"), "--model", "smollm2-135"],
         ("did you mean 'smollm2-135m'",)),
    Case("model-typo-with-hparams-given", lambda ws, t: [*_edit(ws, t / "out"), "--model", "smolm2-135m"],
         ("did you mean 'smollm2-135m'",)),
    Case("model-invalid-hub-id", lambda ws, t: [*_edit(ws, t / "out"), "--model", "not a/valid id!"],
         ("'not a/valid id!'", "hub id")),
    Case("model-hub-id-offline", lambda ws, t: [*_edit(ws, t / "out"), "--model", "someone/uncached-model"],
         ("'someone/uncached-model'", "HF_HUB_OFFLINE")),
    Case("model-hub-unreachable", lambda ws, t: [*_edit(ws, t / "out"), "--model", "someone/uncached-model"],
         ("'someone/uncached-model'", "cannot be reached"), inject=_inject_unreachable_hub),
    Case("model-hub-no-such-repo", lambda ws, t: [*_edit(ws, t / "out"), "--model", "someone/no-such-model"],
         ("'someone/no-such-model'", "no such model on the Hugging Face hub"), inject=_inject_missing_hub_repo),
    Case("model-dir-without-config", lambda ws, t: [*_edit(ws, t / "out"), "--model", str(_model_dir(t, None))],
         ("holds no config.json",)),
    Case("model-dir-corrupt-config", lambda ws, t: [*_edit(ws, t / "out"), "--model", str(_model_dir(t, "{nope"))],
         ("config.json", "cannot read")),
    Case("model-unsupported-type",
         lambda ws, t: [*_edit(ws, t / "out"), "--model", str(_model_dir(t, '{"model_type": "mamba"}'))],
         ("'mamba'", "no ModelAdapter")),
    Case("model-is-a-file", lambda ws, t: [*_edit(ws, t / "out"), "--model", str(_write(t / "m.bin", "x"))],
         ("is a file",)),
    # --- devices ---
    Case("device-cuda-without-cuda", lambda ws, t: _edit(ws, t / "out", "--device", "cuda"),
         ("--device 'cuda'", "CUDA is not available")),
    Case("run-device-cuda-without-cuda", lambda ws, t: _run(ws, t / "out", "--device", "cuda:0"),
         ("--device 'cuda:0'", "CUDA is not available")),
    Case("device-not-a-device", lambda ws, t: _edit(ws, t / "out", "--device", "gpu"), ("--device 'gpu'",)),
    # --- output locations ---
    Case("edit-out-is-a-file", lambda ws, t: _edit(ws, _write(t / "out", "mine")), ("is a file",)),
    Case("edit-out-under-a-file", lambda ws, t: _edit(ws, _write(t / "out", "mine") / "sub"), ("is a file",)),
    Case("edit-out-not-writable", lambda ws, t: _edit(ws, Path("/proc/editprobe-no/out")), ("cannot write under",),
         out=lambda t: Path("/proc/editprobe-no")),
    Case("edit-out-holds-an-earlier-result", lambda ws, t: _edit(ws, t / "out"), ("--overwrite",),
         setup=_earlier_edit_result, then=lambda ws, t: _edit(ws, t / "out", "--overwrite")),
    Case("edit-out-holds-something-else", lambda ws, t: _edit(ws, t / "out"), ("other than an edit result",),
         setup=lambda ws, t: _write(t / "out" / "notes.txt", "mine") and None),
    Case("edit-overwrite-never-deletes-something-else", lambda ws, t: _edit(ws, t / "out", "--overwrite"),
         ("other than an edit result",), setup=lambda ws, t: _write(t / "out" / "notes.txt", "mine") and None),
    Case("run-out-is-a-file", lambda ws, t: _run(ws, _write(t / "out", "mine")), ("is a file",)),
    Case("run-out-not-a-run-dir", lambda ws, t: _run(ws, t / "out"), ("not a run directory",),
         setup=lambda ws, t: _write(t / "out" / "notes.txt", "mine") and None),
    Case("run-out-finished", lambda ws, t: _run(ws, t / "finished"), ("finished run",),
         out=lambda t: t / "finished", setup=lambda ws, t: _finished_run(ws, t) and None),
    Case("resume-missing-dir", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"], ("no run to resume",)),
    Case("resume-typo-with-flags", lambda ws, t: [*_run(ws, t / "out"), "--resume"], ("no run to resume",)),
    Case("resume-empty-dir", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"], ("no run to resume",),
         setup=lambda ws, t: (t / "out").mkdir()),
    Case("resume-corrupt-config", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"],
         ("config.json", "unreadable"), setup=lambda ws, t: _write(t / "out" / "config.json", "{oops") and None),
    Case("resume-under-another-config", lambda ws, t: [*_run(ws, t / "finished"), "--resume", "--seed", "3"],
         ("finished run",), out=lambda t: t / "finished", setup=lambda ws, t: _finished_run(ws, t) and None),
    Case("demo-fresh-refuses-a-foreign-dir",
         lambda ws, t: ["demo", "--out", str(t / "out"), "--fresh"],
         ("not a run directory",), setup=lambda ws, t: _write(t / "out" / "notes.txt", "mine") and None),
    Case("report-on-a-non-run-dir", lambda ws, t: ["report", str(t / "out"), "--out", str(t / "rep")],
         ("out: holds none of summary.json",), out=lambda t: t / "rep", setup=lambda ws, t: (t / "out").mkdir()),
    Case("cache-dir-not-writable", lambda ws, t: _edit(ws, t / "out"), ("cache directory", "EDITPROBE_CACHE"),
         env={"EDITPROBE_CACHE": "/proc/editprobe-cache"}),
    # --- faults during the work ---
    Case("disk-full-writing-the-edit-state", lambda ws, t: _edit(ws, t / "out"),
         ("out: cannot write", "No space left on device", "nothing was written"),
         inject=_inject_enospc_on_state,
         then=lambda ws, t: _edit(ws, t / "out")),
    Case("disk-full-writing-the-covariance-cache",
         lambda ws, t: [*_edit(ws, t / "out"), "--set", "mom2_n_samples=150"],
         ("cannot write", "No space left on device"), inject=_inject_enospc_on_covariance,
         then=lambda ws, t: [*_edit(ws, t / "out"), "--set", "mom2_n_samples=150"]),
    Case("disk-full-before-any-run-result", lambda ws, t: _run(ws, t / "out"), ("No space left on device",),
         inject=_inject_enospc_on_first_stage, then=lambda ws, t: _run(ws, t / "out")),
    Case("disk-full-after-some-run-results", lambda ws, t: _run(ws, t / "out"),
         ("No space left on device", "--resume"), inject=_inject_enospc_on_stage,
         out=lambda t: t / "elsewhere", then=lambda ws, t: ["run", "--out", str(t / "out"), "--resume"]),
    Case("stub-of-a-failed-run-does-not-block", lambda ws, t: _run(ws, t / "out", "--n", "0"), ("'n'",),
         setup=_stub_run_dir, then=lambda ws, t: _run(ws, t / "out")),
    Case("bug-in-edit-is-exit-1-with-one-line", lambda ws, t: _edit(ws, t / "out"),
         ("internal error", "RuntimeError: an injected bug", "--debug"), code=1, inject=_inject_bug),
    Case("bug-in-run-leaves-no-directory", lambda ws, t: _run(ws, t / "out"),
         ("internal error", "an injected bug"), code=1, inject=_inject_bug_in_run,
         then=lambda ws, t: _run(ws, t / "out")),
]
if HAS_CUDA:  # on a CUDA machine these two are not failures
    CASES = [c for c in CASES if "cuda-without-cuda" not in c.id]


def _snapshot(path: Path) -> dict[str, bytes] | None:
    if not path.exists():
        return None
    if path.is_file():
        return {"": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


def test_at_least_forty_cases():
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_or_fault(case: Case, ws, tmp_path, monkeypatch):
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    if case.setup is not None:
        case.setup(ws, tmp_path)
    args = case.args(ws, tmp_path)
    watched = case.out(tmp_path)
    before = _snapshot(watched)
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
    assert _snapshot(watched) == before, f"{watched} changed"
    assert elapsed < 60
    if case.then is not None:
        again = invoke(case.then(ws, tmp_path))
        assert again.exit_code == 0, again.output


def test_debug_shows_the_traceback_of_a_bug(ws, tmp_path, monkeypatch):
    _inject_bug(monkeypatch)
    result = invoke(["--debug", *_edit(ws, tmp_path / "out")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "an injected bug" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: internal error")


def test_messages_are_printed_without_markup_or_wrapping(ws, tmp_path):
    """Brackets in a message survive, a [link=...] in a data field stays text, no wrap at 80."""
    bad = _records(fix={0: lambda r: r["requested_rewrite"].update(prompt="[link=http://x]click[/link] [bold]x")})
    path = _write(tmp_path / ("a-long-directory-name-" * 4) / "bad[1].json", json.dumps(bad))
    result = invoke(_edit(ws, tmp_path / "out", data=path), env={"COLUMNS": "80"})
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and len(line) > 80
    assert "bad[1].json" in line and "[link=http://x]click[/link]" in line


def test_suspicious_data_is_one_warning_with_a_count(ws, tmp_path):
    records = _records(fix={0: lambda r: r["requested_rewrite"]["target_new"].update(
        str=r["requested_rewrite"]["target_true"]["str"]),
        1: lambda r: r["requested_rewrite"]["target_new"].update(str=r["requested_rewrite"]["target_true"]["str"])})
    records.append({**records[2], "case_id": 99})  # the same fact again under another id
    data = _data(tmp_path, records)
    result = invoke(["data", "inspect", str(data)])
    assert result.exit_code == 0
    assert "2 of 7 records have target_new equal to target_true" in result.stderr
    result = invoke(_edit(ws, tmp_path / "out", "--n", "7", data=data))
    assert result.exit_code == 0, result.output
    # (the tiny hparams ask for 200 C0 documents of a 100-document corpus: that warning too)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "bad.json" in line]
    assert len(warnings) == 2, result.stderr
    assert "2 of 7 records have target_new equal to target_true" in warnings[0]
    assert "1 records repeat" in warnings[1] and "id 99 repeats id 2" in warnings[1]


def test_the_builtin_gguf_is_checked_against_the_pinned_sha256(tmp_path, monkeypatch):
    from editprobe.models import builtin

    gguf = _write(tmp_path / "model.gguf", b"not the pinned model")
    with pytest.raises(builtin.BuiltinModelError, match="is not the pinned"):
        builtin.verify_gguf(builtin.BUILTIN_MODELS["smollm2-135m"], gguf)
    # pull verifies before it dequantizes anything
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(builtin, "_find_gguf", lambda spec, work: gguf)
    result = invoke(["models", "pull", "smollm2-135m"])
    assert result.exit_code == 2 and "is not the pinned" in result.stderr
    assert not builtin.is_cached("smollm2-135m")


def test_a_cache_built_from_another_gguf_is_not_used(tmp_path, monkeypatch):
    from editprobe.models import builtin

    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    target = builtin.builtin_cache_path("smollm2-135m")
    _write(target / "editprobe-source.json", json.dumps({"gguf_sha256": "0" * 64}))
    assert not builtin.is_cached("smollm2-135m")


def test_a_corpus_shorter_than_mom2_n_samples_is_one_warning_with_both_numbers(ws, tmp_path):
    result = invoke([*_edit(ws, tmp_path / "out"), "--set", "mom2_n_samples=100000"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "100 documents, fewer than the 100000 asked for (mom2_n_samples)" in warnings[0]
    assert "corpus.txt" in warnings[0]  # names the corpus, not its hash
