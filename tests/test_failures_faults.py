"""Faults during the work (a full disk, a numerically failed batch, a bug): one line, the work
kept or nothing left behind, and the next run works (the harness: failure_harness.py)."""

from __future__ import annotations


from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, edit_args, inject_bug, inject_bug_in_run, inject_enospc_on_covariance,
    inject_enospc_on_first_stage, inject_enospc_on_stage, inject_enospc_on_state, parametrize, run_args,
    stub_run_dir, write, ws)

CASES = [
    Case("disk-full-writing-the-edit-state", lambda ws, t: edit_args(ws, t / "out"),
         ("out: cannot write", "No space left on device", "nothing was written"),
         inject=inject_enospc_on_state,
         then=lambda ws, t: edit_args(ws, t / "out")),
    Case("disk-full-writing-the-covariance-cache",
         lambda ws, t: [*edit_args(ws, t / "out"), "--set", "mom2_n_samples=150"],
         ("cannot write", "No space left on device"), inject=inject_enospc_on_covariance,
         then=lambda ws, t: [*edit_args(ws, t / "out"), "--set", "mom2_n_samples=150"]),
    Case("disk-full-before-any-run-result", lambda ws, t: run_args(ws, t / "out"), ("No space left on device",),
         inject=inject_enospc_on_first_stage, then=lambda ws, t: run_args(ws, t / "out")),
    Case("disk-full-after-some-run-results", lambda ws, t: run_args(ws, t / "out"),
         ("No space left on device", "--resume"), inject=inject_enospc_on_stage,
         out=lambda t: t / "elsewhere", then=lambda ws, t: ["run", "--out", str(t / "out"), "--resume"]),
    Case("stub-of-a-failed-run-does-not-block", lambda ws, t: run_args(ws, t / "out", "--n", "0"), ("'n'",),
         setup=stub_run_dir, then=lambda ws, t: run_args(ws, t / "out")),
    Case("bug-in-edit-is-exit-1-with-one-line", lambda ws, t: edit_args(ws, t / "out"),
         ("internal error", "RuntimeError: an injected bug", "--debug"), code=1, inject=inject_bug),
    Case("bug-in-run-leaves-no-directory", lambda ws, t: run_args(ws, t / "out"),
         ("internal error", "an injected bug"), code=1, inject=inject_bug_in_run,
         then=lambda ws, t: run_args(ws, t / "out")),
]


@parametrize(CASES)
def test_bad_input(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def test_a_corpus_shorter_than_mom2_n_samples_is_one_warning_with_both_numbers(ws, tmp_path):
    result = invoke([*edit_args(ws, tmp_path / "out"), "--set", "mom2_n_samples=100000"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "100 documents, fewer than the 100000 asked for (mom2_n_samples)" in warnings[0]
    assert "corpus.txt" in warnings[0]  # names the corpus, not its hash
