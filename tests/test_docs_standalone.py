"""The repository stands alone: no tracked file points readers to design notes that live
outside it (the method notes, the protocol note, ...); their content is in docs/."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from markdown.extensions.toc import slugify

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


# `docs/page.md` or `docs/page.md#anchor` where code, study files, hparams files or the
# README name a page for the reader to open.
DOCS_PAGE = re.compile(r"docs/([\w./-]+?\.md)(?:#([\w-]+))?")


def _anchors(page: Path) -> set[str]:
    """The heading ids MkDocs gives a page (Markdown's toc slugify, MkDocs' default);
    explicit `{#id}` attributes count too."""
    ids = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            continue
        title = line.lstrip("#").strip()
        explicit = re.search(r"\{#([\w-]+)\}\s*$", title)
        if explicit:
            ids.add(explicit.group(1))
            continue
        ids.add(slugify(re.sub(r"`|\*", "", title), "-"))
    return ids


def test_every_docs_page_named_outside_docs_exists():
    missing = []
    for path in _tracked():
        if path.suffix not in {".py", ".yaml", ".yml", ".toml", ".cfg"} and path.name not in {"README.md", "Makefile"}:
            continue
        if path.is_relative_to(ROOT / "docs") or path.is_relative_to(ROOT / "tests"):
            continue
        text = path.read_text(encoding="utf-8")
        for i, line in enumerate(text.splitlines(), 1):
            for page, anchor in DOCS_PAGE.findall(line):
                target = ROOT / "docs" / page
                where = f"{path.relative_to(ROOT)}:{i}"
                if not target.is_file():
                    missing.append(f"{where} docs/{page}")
                elif anchor and anchor not in _anchors(target):
                    missing.append(f"{where} docs/{page}#{anchor}")
    assert not missing, "named but not there: " + ", ".join(missing)
