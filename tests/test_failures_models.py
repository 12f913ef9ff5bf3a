"""Bad model references and devices: one line each, before any model is loaded
(the harness: failure_harness.py)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, edit_args, inject_missing_hub_repo, inject_unreachable_hub, model_dir, parametrize, run_args,
    without, write, ws)

CASES = [
    Case("model-missing-local-dir", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "./no-such-model-dir"],
         ("'./no-such-model-dir'", "no such directory")),
    Case("model-builtin-typo", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "smollm2-135"],
         ("did you mean 'smollm2-135m'",)),
    Case("model-typo-with-hparams-given", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "smolm2-135m"],
         ("did you mean 'smollm2-135m'",)),
    Case("model-invalid-hub-id", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "not a/valid id!"],
         ("'not a/valid id!'", "hub id")),
    Case("model-hub-id-offline", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "someone/uncached-model"],
         ("'someone/uncached-model'", "HF_HUB_OFFLINE")),
    Case("model-hub-unreachable", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "someone/uncached-model"],
         ("'someone/uncached-model'", "cannot be reached"), inject=inject_unreachable_hub),
    Case("model-hub-no-such-repo", lambda ws, t: [*edit_args(ws, t / "out"), "--model", "someone/no-such-model"],
         ("'someone/no-such-model'", "no such model on the Hugging Face hub"), inject=inject_missing_hub_repo),
    Case("model-dir-without-config", lambda ws, t: [*edit_args(ws, t / "out"), "--model", str(model_dir(t, None))],
         ("holds no config.json",)),
    Case("model-dir-corrupt-config", lambda ws, t: [*edit_args(ws, t / "out"), "--model", str(model_dir(t, "{nope"))],
         ("config.json", "cannot read")),
    Case("model-unsupported-type",
         lambda ws, t: [*edit_args(ws, t / "out"), "--model", str(model_dir(t, '{"model_type": "mamba"}'))],
         ("'mamba'", "no ModelAdapter")),
    Case("model-is-a-file", lambda ws, t: [*edit_args(ws, t / "out"), "--model", str(write(t / "m.bin", "x"))],
         ("is a file",)),    Case("device-cuda-without-cuda", lambda ws, t: edit_args(ws, t / "out", "--device", "cuda"),
         ("--device 'cuda'", "CUDA is not available")),
    Case("run-device-cuda-without-cuda", lambda ws, t: run_args(ws, t / "out", "--device", "cuda:0"),
         ("--device 'cuda:0'", "CUDA is not available")),
    Case("device-not-a-device", lambda ws, t: edit_args(ws, t / "out", "--device", "gpu"), ("--device 'gpu'",)),
]


@parametrize(CASES)
def test_bad_input(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def test_the_builtin_gguf_is_checked_against_the_pinned_sha256(tmp_path, monkeypatch):
    from editprobe.models import builtin

    gguf = write(tmp_path / "model.gguf", b"not the pinned model")
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
    write(target / "editprobe-source.json", json.dumps({"gguf_sha256": "0" * 64}))
    assert not builtin.is_cached("smollm2-135m")
