"""docs/failure-cases.md lists every case of the failure tables (the Case and Damage ids of
tests/test_failures_*.py), so the page a user reads cannot fall behind the tests."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "failure-cases.md"
MODULES = sorted(p.stem for p in Path(__file__).parent.glob("test_failures_*.py"))


@pytest.mark.parametrize("module", MODULES)
def test_every_case_is_on_the_page(module):
    tables = importlib.import_module(module)
    ids = [case.id for name in ("CASES", "DAMAGES") for case in getattr(tables, name, [])]
    missing = [i for i in ids if f"`{i}`" not in DOC.read_text(encoding="utf-8")]
    assert not missing, f"docs/failure-cases.md lacks {module}'s cases {missing}"
