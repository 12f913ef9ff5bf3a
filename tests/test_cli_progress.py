"""Progress off a terminal: one plain line per step with counts and an ETA, no bars, no carriage
returns (editprobe/progress.py). The demo in a subprocess whose stdout and stderr are pipes, as
``make demo > log 2>&1`` runs it, shows a line per editing batch."""

from __future__ import annotations

import io
import re
import subprocess
import sys

import yaml
from rich.console import Console
from test_runs_helpers import config, subprocess_env, workspace

from editprobe.progress import PlainProgress, RichProgress, TeeProgress, announce, format_seconds, progress


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_have_counts_elapsed_and_eta():
    stream, clock = io.StringIO(), _Clock()
    bar = PlainProgress("run memit", "positive", 5, 0, unit="batch", counts=lambda b: f"{b * 20}/100 records",
                        stream=stream, clock=clock)
    clock.now = 64.0
    bar.advance()
    clock.now = 192.0
    bar.advance()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[run memit] positive batch 0/5 (0/100 records) 0s elapsed"
    assert lines[1] == "[run memit] positive batch 1/5 (20/100 records) 1m04s elapsed, ETA 4m16s"
    assert lines[2] == "[run memit] positive batch 2/5 (40/100 records) 3m12s elapsed, ETA 4m48s"
    assert "\r" not in stream.getvalue()


def test_a_resumed_stage_estimates_from_this_process_s_steps_and_lines_are_throttled():
    stream, clock = io.StringIO(), _Clock()
    bar = PlainProgress("x", "editing", 10, 4, unit="batch", stream=stream, clock=clock, every_s=30)
    clock.now = 10.0
    bar.advance()  # 10 s after the first line: left out
    clock.now = 40.0
    bar.advance()  # 6/10 after 40 s for 2 batches: ETA 80 s
    clock.now = 41.0
    bar.update(completed=10)  # the last step always prints
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[1].endswith("6/10 40s elapsed, ETA 1m20s") and lines[2].startswith("[x] editing batch 10/10")


def test_format_seconds():
    assert [format_seconds(s) for s in (0, 59.4, 192, 3725)] == ["0s", "59s", "3m12s", "1h02m"]


def test_the_reporter_is_chosen_by_the_console():
    with progress("editing", 3, console=Console(file=io.StringIO(), force_terminal=True)) as bar:
        assert isinstance(bar, RichProgress)
    with progress("editing", 3, console=Console(file=io.StringIO(), force_terminal=False)) as bar:
        assert isinstance(bar, PlainProgress)
    with progress("editing", 3, enabled=False) as bar:
        assert bar is None


def test_demo_with_piped_output_prints_a_progress_line_per_batch(tmp_path):
    ws = workspace(tmp_path)
    fields = config(ws, tmp_path / "unused", methods=("memit",)).model_dump(mode="json", exclude={"out"})
    cfg_path = tmp_path / "demo.yaml"
    cfg_path.write_text(yaml.safe_dump(fields))
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "editprobe", "demo", "--config", str(cfg_path), "--out", str(out),
                           "--threads", "1"], env=subprocess_env(tmp_path), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr and "\x1b" not in done.stderr
    key = r"\S+"  # the dataset file's key
    for kind in ("positive", "negative"):
        pattern = rf"^\[{key} memit {kind}\] editing batch (\d)/2 \((\d)/6 records\) \d+s elapsed"
        found = [m.groups() for m in re.finditer(pattern, done.stderr, flags=re.M)]
        assert found == [("0", "0"), ("1", "3"), ("2", "6")], done.stderr
    assert "ETA" in done.stderr


def test_a_redirected_stdout_gets_the_lines_while_the_terminal_keeps_its_bar(monkeypatch):
    """``make demo > log``: stderr is the terminal (the bar), stdout the log (the lines)."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stdout", log)
    terminal = Console(file=io.StringIO(), force_terminal=True, stderr=True)
    with progress("editing batch", 2, label="cf memit positive", console=terminal,
                  counts=lambda done: f"{3 * done}/6 records") as bar:
        assert isinstance(bar, TeeProgress)
        bar.update(advance=1)
        bar.update(advance=1)
    lines = log.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == [f"[cf memit positive] editing batch {i}/2" for i in range(3)]
    assert "(6/6 records)" in lines[-1] and "\r" not in log.getvalue()
    with progress("editing", 2, console=Console(file=io.StringIO(), force_terminal=True)) as bar:
        assert isinstance(bar, RichProgress)  # a console on stdout itself: no second copy


def test_a_redirected_stdout_gets_the_stage_lines_too(monkeypatch):
    """``make demo > log``: a stage's line ("…: unedited model, 40 records: …") reaches the log
    as one plain line, besides the terminal."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stdout", log)
    screen = io.StringIO()
    text = "cf: unedited model, 40 records: " + ", ".join(["negation"] * 20)  # longer than a terminal line
    announce(Console(file=screen, force_terminal=True, stderr=True, width=80), text, bold="cf")
    assert log.getvalue() == text + "\n"
    assert "\x1b[1mcf\x1b[0m: unedited model" in screen.getvalue()
    announce(Console(file=io.StringIO(), force_terminal=False, stderr=True), text)  # no terminal: stderr only
    assert log.getvalue() == text + "\n"
