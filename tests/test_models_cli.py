"""`editprobe models list|pull` through the real command tree, on a temporary cache."""

from __future__ import annotations

import json
import re

import pytest
from cli_helpers import invoke

from editprobe.models import builtin as builtin_mod
from editprobe.models import builtin_cache_path



@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_cached(name: str = "smollm2-135m"):
    target = builtin_cache_path(name)
    target.mkdir(parents=True)
    (target / "editprobe-source.json").write_text(json.dumps({"name": name, "gguf_sha256": builtin_mod.BUILTIN_MODELS[name].gguf_sha256}))
    return target


def test_models_list_on_an_empty_cache(cache):
    result = invoke(["models", "list"])
    assert result.exit_code == 0, result.output
    assert re.search(r"smollm2-135m\s*│\s*no\s*│\s*Apache-2.0", result.output), result.output


def test_models_list_shows_a_cached_model(cache):
    _fake_cached()
    result = invoke(["models", "list"])
    assert result.exit_code == 0, result.output
    assert re.search(r"smollm2-135m\s*│\s*yes\s*│", result.output), result.output


def test_models_pull_unknown_name_fails_clearly(cache):
    result = invoke(["models", "pull", "gpt-9"])
    assert result.exit_code == 2
    assert "unknown built-in model 'gpt-9'" in result.output and "smollm2-135m" in result.output


def test_models_pull_when_cached_does_no_work(cache, monkeypatch):
    target = _fake_cached()

    def no_rebuild(*_a, **_k):
        raise AssertionError("pull rebuilt a cached model")

    monkeypatch.setattr(builtin_mod, "_find_gguf", no_rebuild)
    result = invoke(["models", "pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert "already cached" in result.output
    assert str(target.name) in result.output


def test_models_group_without_a_command_shows_help():
    result = invoke(["models"])
    assert "pull" in result.output and "list" in result.output


@pytest.mark.integration
def test_models_pull_with_the_real_cache(smollm2):
    # The session fixture guarantees the real model is cached, so this must not rebuild it.
    result = invoke(["models", "pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert "smollm2-135m: already cached" in result.output
