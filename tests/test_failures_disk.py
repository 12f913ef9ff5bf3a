"""A full disk, for real: the command line in a subprocess whose file-size limit
(``RLIMIT_FSIZE``, no privileges needed) makes one chosen write fail with the error the
libraries really raise there (EFBIG, "File too large": safetensors' SafetensorError,
Python's OSError from ``Path.write_text``, matplotlib's from ``savefig``), and standard
output on ``/dev/full`` (ENOSPC). SIGXFSZ is ignored in the child, so the write fails
instead of the process dying. Each limit is checked against the sizes of the files the
command writes, so it stays on the write it is meant for.

For each: exit 2, exactly one ``error:`` line naming the file and the reason, no traceback,
no temporary left behind, and the next command (without the limit) works; a run keeps the
work done before and ``--resume`` finishes it, equal to an uninterrupted run. The same sites
with "No space left on device" are in test_failures_faults.py (the library's exception,
injected: a full file system needs a mount).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import invoke
from failure_harness import edit_args, run_args
from test_runs_helpers import comparable, subprocess_env, workspace

# The child sets its own limit before importing editprobe (a preexec_fn is unsafe in a
# process with threads, as pytest's is once torch is imported).
LIMITED = """
import resource, signal, sys
limit = int(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG from write(), not death
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from editprobe.cli import main
sys.exit(main(sys.argv[2:]))
"""
KIB = 1024


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The workspace, and one finished run (``reference``) made without a limit: it warms
    the statistics cache and gives the sizes the limits are chosen against."""
    root = tmp_path_factory.mktemp("disk")
    paths = {**workspace(root), "root": root, "env": subprocess_env(root)}
    reference = root / "reference"
    _again(paths, _run(paths, reference))
    return {**paths, "reference": reference}


def _edit(ws, out, *extra):
    return edit_args(ws, out, *extra, n=4)


# The paper's probes only: the sizes these tests set their limits between (a stage file under a
# checkpoint) do not move as the default probe set grows.
PROBES = ("--probe", "negation", "--probe", "factcheck", "--probe", "efficacy", "--probe", "perplexity")


def _run(ws, out, *extra):
    return run_args(ws, out, *PROBES, *extra, n=4)


def _cli(ws, args, limit: int | None = None, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    head = [sys.executable, "-c", LIMITED, str(limit)] if limit is not None else [sys.executable, "-m", "editprobe"]
    kwargs.setdefault("capture_output", "stdout" not in kwargs)
    if "stdout" in kwargs:
        kwargs["stderr"] = subprocess.PIPE
    return subprocess.run([*head, *map(str, args)], env={**ws["env"], **(env or {})}, text=True, timeout=600,
                          **kwargs)


def _again(ws, args, cache: Path | None = None) -> None:
    """The next command, without a limit (in-process: it only has to work)."""
    result = invoke([str(a) for a in args], env={"EDITPROBE_CACHE": str(cache or ws["root"] / "cache")})
    assert result.exit_code == 0, result.output


def _one_error(done: subprocess.CompletedProcess, code: int = 2) -> str:
    """The one error line of a command that failed with ``code``, and nothing of a bug."""
    text = done.stderr + (done.stdout or "")
    assert done.returncode == code, text
    assert "Traceback" not in text and "Exception ignored" not in text, text
    errors = [line for line in done.stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].startswith("error: "), done.stderr
    print(errors[0])  # the messages, with -s
    return errors[0]


def _temporaries(root: Path) -> list[str]:
    """What an interrupted atomic write would leave: dot-named ``.NAME.tmp-*`` / ``.NAME.old``."""
    return [str(p) for p in root.rglob(".*") if ".tmp-" in p.name or p.name.endswith(".old")] if root.exists() else []


def _size(path: Path) -> int:
    return path.stat().st_size


# --- edit -----------------------------------------------------------------------------------------


def test_edit_whose_state_does_not_fit(ws, tmp_path):
    out, limit = tmp_path / "edit", 16 * KIB
    line = _one_error(_cli(ws, _edit(ws, out), limit))
    assert line == f"error: --out {out}: cannot write: File too large; nothing was written"
    assert not out.exists() and not _temporaries(tmp_path)
    _again(ws, _edit(ws, out))
    # The limit fell on the state's tensors (safetensors), after everything smaller.
    assert _size(out / "report.json") < limit < _size(out / "state" / "deltas.safetensors")
    assert _size(out / "state" / "state.json") < limit


def test_edit_whose_covariance_statistics_do_not_fit(ws, tmp_path):
    out, cache, limit = tmp_path / "edit", tmp_path / "cache", 16 * KIB  # a cold cache: C0 is computed
    line = _one_error(_cli(ws, _edit(ws, out), limit, env={"EDITPROBE_CACHE": str(cache)}))
    stats = re.escape(str(cache / "stats"))
    assert re.fullmatch(rf"error: cannot write {stats}/\S+/mom2_layer\d+_\S+\.safetensors: File too large", line), line
    assert not list(cache.rglob("*.safetensors")) or all(  # what is there is complete and small
        "targets" in p.parts for p in cache.rglob("*.safetensors"))
    assert not _temporaries(cache) and not (out / "report.json").exists()
    _again(ws, _edit(ws, out), cache)
    assert min(_size(p) for p in (cache / "stats").rglob("mom2_*.safetensors")) > limit


# --- run ------------------------------------------------------------------------------------------


def test_run_whose_first_result_does_not_fit_leaves_nothing(ws, tmp_path):
    out, limit = tmp_path / "run", 4 * KIB
    stages = ws["reference"] / "stages"
    assert _size(ws["reference"] / "config.json") < limit < _size(stages / "cf__baseline.json")
    line = _one_error(_cli(ws, _run(ws, out), limit))
    assert line == f"error: cannot write {out}/stages/cf__baseline.json: File too large"
    assert not out.exists()  # a run that failed before saving any work removes what it made
    _again(ws, _run(ws, out))


def test_run_whose_checkpoint_does_not_fit_keeps_its_work_and_resumes(ws, tmp_path):
    out, limit = tmp_path / "run", 16 * KIB
    ref = ws["reference"]
    assert max(_size(p) for p in (ref / "stages").glob("*.json")) < limit
    line = _one_error(_cli(ws, _run(ws, out), limit))
    assert line == (f"error: cannot write {out}/checkpoints/cf__memit__positive: File too large (the work done "
                    f"is kept: editprobe run --out {out} --resume continues it)")
    assert (out / "stages" / "cf__baseline.json").is_file() and not _temporaries(out)
    assert not (out / "checkpoints" / "cf__memit__positive").exists()
    _again(ws, ["run", "--out", out, "--resume"])
    summary = json.loads((out / "summary.json").read_text())
    assert comparable(summary) == comparable(json.loads((ref / "summary.json").read_text()))


# --- figures and pages ----------------------------------------------------------------------------


def test_trace_whose_figure_does_not_fit(ws, tmp_path):
    out, limit = tmp_path / "trace", 16 * KIB  # the arrays (~2 KB) fit; a heat map (~35 KB) does not
    args = ["trace", "--model", ws["model"], "--data", ws["data"], "--n", "4", "--samples", "2",
            "--layers-window", "2", "--threads", "1", "--out", out]
    line = _one_error(_cli(ws, args, limit))
    assert re.fullmatch(rf"error: cannot write {re.escape(str(out))}/trace_\w+\.png: File too large", line), line
    assert not (out / "trace.json").exists() and not _temporaries(out)
    assert _size(out / "trace_records.safetensors") < limit
    _again(ws, args)
    assert (out / "trace.json").is_file()


def test_report_whose_page_does_not_fit(ws, tmp_path):
    page, tables, limit = tmp_path / "page.html", tmp_path / "tables", 64 * KIB
    args = ["report", ws["reference"], "--out", tables, "--html", page]
    line = _one_error(_cli(ws, args, limit))
    assert line == f"error: cannot write {page}: File too large"
    assert not page.exists() and not _temporaries(tmp_path)
    assert max(_size(p) for p in tables.iterdir()) < limit  # the tables came first and fit
    _again(ws, args)
    assert _size(page) > limit


# --- standard output ------------------------------------------------------------------------------


def _dev_full() -> Path:
    """/dev/full, where it is the kernel's device (a container may lack it: never write to a
    path that is not, or a regular file would be created there)."""
    path = Path("/dev/full")
    try:
        st = path.stat()
    except OSError:
        pytest.skip("no /dev/full on this machine (the RLIMIT_FSIZE case covers standard output)")
    if not (stat.S_ISCHR(st.st_mode) and (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 7)):
        pytest.skip("/dev/full is not the kernel's full device here")
    return path


@pytest.mark.parametrize("command", [["models", "list"], ["report", "REFERENCE", "--out", "TABLES"]],
                         ids=["models-list", "report"])
def test_standard_output_on_dev_full(ws, tmp_path, command):
    full = _dev_full()
    args = [{"REFERENCE": ws["reference"], "TABLES": tmp_path / "tables"}.get(a, a) for a in command]
    with open(full, "w") as stdout:
        line = _one_error(_cli(ws, args, stdout=stdout))
    assert line == "error: cannot write to standard output: No space left on device"


@pytest.mark.parametrize("command", [["models", "list"], ["report", "REFERENCE", "--out", "TABLES"]],
                         ids=["models-list", "report"])
def test_standard_output_over_the_file_size_limit(ws, tmp_path, command):
    # stdout appends to a file already at the limit: every write fails whole (a write that
    # crosses the limit is cut short, and Python drops the rest without an error).
    limit = 4 * KIB
    captured = tmp_path / "stdout.txt"
    captured.write_bytes(b"." * limit)
    args = [{"REFERENCE": ws["reference"], "TABLES": tmp_path / "tables"}.get(a, a) for a in command]
    with open(captured, "a") as stdout:
        line = _one_error(_cli(ws, args, limit, stdout=stdout))
    assert line == "error: cannot write to standard output: File too large"
    assert _size(captured) == limit


def test_standard_output_that_works_is_untouched():
    result = invoke(["models", "list"])
    assert result.exit_code == 0 and "smollm2-135m" in result.stdout


# --- the libraries ---------------------------------------------------------------------------------


def test_the_product_never_writes_with_torch_save():
    """torch.save on a full disk raises RuntimeError("[enforce fail at inline_container.cc:...]
    unexpected pos ..."), with no errno to name: editprobe writes tensors with safetensors
    only, whose failures paths.atomic_path maps (and never unpickles, so never torch.load)."""
    src = Path(__file__).resolve().parents[1] / "src" / "editprobe"
    users = [str(p.relative_to(src)) for p in src.rglob("*.py") if re.search(r"\btorch\.save\(", p.read_text())]
    assert users == []


def test_only_the_io_errors_of_safetensors_are_write_failures():
    from safetensors import SafetensorError

    from editprobe.paths import write_failure_reason

    efbig = SafetensorError("Error while serializing: I/O error: File too large (os error 27)")  # as raised above
    assert write_failure_reason(efbig) == "File too large"
    assert write_failure_reason(OSError(28, "No space left on device")) == "No space left on device"
    assert write_failure_reason(SafetensorError("Error while serializing: tensor is not contiguous")) is None
    assert write_failure_reason(RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")) is None
