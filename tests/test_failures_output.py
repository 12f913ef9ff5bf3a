"""Output locations: what editprobe refuses to touch, resumes, or replaces only when asked
(the harness: failure_harness.py)."""

from __future__ import annotations

from pathlib import Path

from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, marked, check_case, earlier_edit_result, edit_args, finished_run, parametrize, run_args, write, ws)

CASES = [
    Case("edit-out-is-a-file", lambda ws, t: edit_args(ws, write(t / "out", "mine")), ("is a file",)),
    Case("edit-out-under-a-file", lambda ws, t: edit_args(ws, write(t / "out", "mine") / "sub"), ("is a file",)),
    Case("edit-out-not-writable", lambda ws, t: edit_args(ws, Path("/proc/editprobe-no/out")), ("cannot write under",),
         out=lambda t: Path("/proc/editprobe-no")),
    Case("edit-out-holds-an-earlier-result", lambda ws, t: edit_args(ws, t / "out"), ("--overwrite",),
         setup=earlier_edit_result, then=lambda ws, t: edit_args(ws, t / "out", "--overwrite")),
    Case("edit-out-holds-something-else", lambda ws, t: edit_args(ws, t / "out"), ("not an edit result directory",),
         setup=lambda ws, t: write(t / "out" / "notes.txt", "mine") and None),
    Case("edit-overwrite-never-deletes-something-else", lambda ws, t: edit_args(ws, t / "out", "--overwrite"),
         ("not an edit result directory",), setup=lambda ws, t: write(t / "out" / "notes.txt", "mine") and None),
    Case("run-out-is-a-file", lambda ws, t: run_args(ws, write(t / "out", "mine")), ("is a file",)),
    Case("run-out-not-a-run-dir", lambda ws, t: run_args(ws, t / "out"), ("not a run directory",),
         setup=lambda ws, t: write(t / "out" / "notes.txt", "mine") and None),
    Case("run-out-finished", lambda ws, t: run_args(ws, t / "finished"), ("finished run",),
         out=lambda t: t / "finished", setup=lambda ws, t: finished_run(ws, t) and None),
    Case("resume-missing-dir", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"], ("no run to resume",)),
    Case("resume-typo-with-flags", lambda ws, t: [*run_args(ws, t / "out"), "--resume"], ("no run to resume",)),
    Case("resume-empty-dir", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"], ("no run to resume",),
         setup=lambda ws, t: (t / "out").mkdir()),
    Case("resume-corrupt-config", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"],
         ("config.json", "unreadable"),
         setup=lambda ws, t: write(marked(t / "out") / "config.json", "{oops") and None),
    Case("resume-a-config-json-editprobe-did-not-write", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"],
         ("not a run directory", "config.json", ".editprobe.json"),
         setup=lambda ws, t: write(t / "out" / "config.json", "{oops") and None),
    Case("resume-under-another-config", lambda ws, t: [*run_args(ws, t / "finished"), "--resume", "--seed", "3"],
         ("finished run",), out=lambda t: t / "finished", setup=lambda ws, t: finished_run(ws, t) and None),
    Case("demo-fresh-refuses-a-foreign-dir",
         lambda ws, t: ["demo", "--out", str(t / "out"), "--fresh"],
         ("not a run directory",), setup=lambda ws, t: write(t / "out" / "notes.txt", "mine") and None),
    Case("report-on-a-non-run-dir", lambda ws, t: ["report", str(t / "out"), "--out", str(t / "rep")],
         ("out: holds none of summary.json",), out=lambda t: t / "rep", setup=lambda ws, t: (t / "out").mkdir()),
    Case("cache-dir-not-writable", lambda ws, t: edit_args(ws, t / "out"), ("cache directory", "EDITPROBE_CACHE"),
         env={"EDITPROBE_CACHE": "/proc/editprobe-cache"}),
]


@parametrize(CASES)
def test_bad_input(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)
