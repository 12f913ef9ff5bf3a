"""load_model, the built-in cache and pull's safety checks, without the real model."""

from __future__ import annotations

import json

import pytest
import torch

from editprobe.models import LoadedModel, builtin_cache_path, encode, is_cached, load_model, parse_dtype, pull
from editprobe.models import builtin as builtin_mod
from editprobe.models.builtin import BuiltinModelError, load_dequantized, tied_parameter_names
from editprobe.errors import ModelReferenceError
from editprobe.models.progress import quiet_progress


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["./no-such-model", "/no/such/model", "~/no-such-model-dir", "../nope"])
def test_missing_local_path_is_a_clear_error_not_a_hub_lookup(path):
    with pytest.raises(ModelReferenceError) as info:
        load_model(path)
    message = str(info.value)
    assert repr(path) in message and "no such directory" in message
    assert "smollm2-135m" in message  # says what else would work


def test_a_file_instead_of_a_directory(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"")
    with pytest.raises(ModelReferenceError, match="is a file"):
        load_model(str(f))


@pytest.mark.parametrize("name", ["smollm2-135", "smollm2-135M", "smolm2-135m"])
def test_near_miss_of_a_builtin_name_is_not_sent_to_the_hub(name):
    with pytest.raises(ModelReferenceError, match=r"did you mean 'smollm2-135m'"):
        load_model(name)


def test_pull_of_an_unknown_builtin_lists_the_builtins(cache):
    with pytest.raises(BuiltinModelError, match=r"unknown built-in model 'gpt-9'; built-ins: smollm2-135m"):
        pull("gpt-9")
    assert not (cache / "models" / "gpt-9").exists()


def test_bad_dtype_fails_before_loading():
    with pytest.raises(ValueError, match="unknown dtype 'float8'.*bf16"):
        load_model("./no-such-model", dtype="float8")


def test_parse_dtype():
    assert parse_dtype(None) is None
    assert parse_dtype("BF16") is torch.bfloat16
    assert parse_dtype("float32") is torch.float32
    assert parse_dtype(torch.float16) is torch.float16


# --- a local directory ------------------------------------------------------------------


@pytest.fixture
def saved_tiny(tmp_path, tiny):
    loaded = tiny("llama", tie_word_embeddings=True)
    with quiet_progress():  # save_pretrained draws a "Writing model shards" bar
        loaded.model.save_pretrained(tmp_path / "tiny")
    loaded.tokenizer.save_pretrained(tmp_path / "tiny")
    return loaded, tmp_path / "tiny"


def test_load_a_local_directory(saved_tiny, capfd):
    original, path = saved_tiny
    from transformers.utils import logging as hf_logging

    bars_before = hf_logging.is_progress_bar_enabled()
    loaded = load_model(str(path))
    assert isinstance(loaded, LoadedModel)
    model, tok, adapter = loaded  # unpacks like a tuple
    assert adapter.model_type == "llama" and loaded.name == str(path)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert tok.padding_side == "right" and tok.pad_token is not None
    ids = torch.tensor([encode(tok, "The capital of France is")])
    assert ids.tolist() == [encode(original.tokenizer, "The capital of France is")]
    torch.testing.assert_close(model(ids).logits, original.model(ids).logits)
    # Quiet: no per-tensor progress bar, and the global switch is restored afterwards.
    assert "Loading weights" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == bars_before


def test_load_with_dtype(saved_tiny):
    _, path = saved_tiny
    model = load_model(str(path), dtype="bf16").model
    assert next(model.parameters()).dtype is torch.bfloat16


def test_quiet_progress_restores_the_gguf_bar():
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    original = gguf_utils.tqdm
    with quiet_progress(gguf=True):
        assert gguf_utils.tqdm is not original
        assert gguf_utils.tqdm(range(3)).disable
    assert gguf_utils.tqdm is original
    with pytest.raises(KeyError):
        with quiet_progress(gguf=True):
            raise KeyError("still restored")
    assert gguf_utils.tqdm is original


# --- the built-in cache -----------------------------------------------------------------


def test_cache_location_follows_editprobe_cache(cache):
    assert builtin_cache_path("smollm2-135m") == cache / "models" / "smollm2-135m"
    assert not is_cached("smollm2-135m")


def test_pull_reads_the_cache_once_it_exists(cache, monkeypatch):
    target = builtin_cache_path("smollm2-135m")
    target.mkdir(parents=True)
    (target / "editprobe-source.json").write_text(json.dumps({"name": "smollm2-135m", "gguf_sha256": builtin_mod.BUILTIN_MODELS["smollm2-135m"].gguf_sha256}))

    def no_rebuild(*_a, **_k):
        raise AssertionError("pull rebuilt a cached model")

    monkeypatch.setattr(builtin_mod, "_find_gguf", no_rebuild)
    assert is_cached("smollm2-135m")
    assert pull("smollm2-135m") == target
    with pytest.raises(AssertionError, match="rebuilt"):
        pull("smollm2-135m", force=True)  # force does rebuild


# --- pull's check of the rebuilt state dict ----------------------------------------------


def test_tied_parameter_names(tiny):
    assert tied_parameter_names(tiny("llama", tie_word_embeddings=True).model) == {"lm_head.weight"}
    assert tied_parameter_names(tiny("llama", tie_word_embeddings=False).model) == set()


def test_load_dequantized_tolerates_only_missing_tied_weights(tiny):
    source = tiny("llama", seed=1, tie_word_embeddings=True).model
    state = {k: v for k, v in source.state_dict().items() if k != "lm_head.weight"}
    target = tiny("llama", seed=2, tie_word_embeddings=True).model
    load_dequantized(target, state)
    assert torch.equal(target.model.embed_tokens.weight, source.model.embed_tokens.weight)
    assert target.lm_head.weight.data_ptr() == target.model.embed_tokens.weight.data_ptr()


@pytest.mark.parametrize(
    "change,match",
    [
        (lambda s: s.pop("model.layers.1.mlp.down_proj.weight"), r"missing \['model.layers.1.mlp.down_proj.weight'\]"),
        (lambda s: s.__setitem__("model.layers.9.extra", torch.zeros(1)), r"unexpected \['model.layers.9.extra'\]"),
    ],
)
def test_load_dequantized_rejects_other_mismatches(tiny, change, match):
    state = dict(tiny("llama", tie_word_embeddings=True).model.state_dict())
    change(state)
    with pytest.raises(BuiltinModelError, match=match):
        load_dequantized(tiny("llama", tie_word_embeddings=True).model, state)


def test_load_dequantized_untied_head_must_be_present(tiny):
    state = {k: v for k, v in tiny("llama").model.state_dict().items() if k != "lm_head.weight"}
    with pytest.raises(BuiltinModelError, match=r"missing \['lm_head.weight'\]"):
        load_dequantized(tiny("llama").model, state)
