"""The repository stands alone: no tracked file points readers to design notes that live
outside it (the method notes, the protocol note, ...); their content is in docs/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Spelled in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join(["lte" + "-methods", "evaluation" + r"-protocol\.md", "shared" + "/design",
                               "code" + "-review-20", "architecture" + r"\.md"]))


def _tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / line for line in out.splitlines() if not line.startswith("runs/")]


def test_no_tracked_file_cites_the_external_design_notes():
    hits = []
    for path in _tracked():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
        hits += [f"{path.relative_to(ROOT)}:{i}" for i, line in enumerate(text.splitlines(), 1) if OUTSIDE.search(line)]
    assert not hits, "cite docs/ pages instead: " + ", ".join(hits[:20])
