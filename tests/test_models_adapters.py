"""ModelAdapters: every registered architecture, built tiny from its config."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from editprobe.models import ADAPTERS, ModelAdapter, UnsupportedModelError, get_adapter, register_adapter
from editprobe.models.adapters import KINDS, LAYER_KINDS
from editprobe.models.tiny import TINY, offline_tokenizer, tiny_model

ALL_TYPES = sorted(ADAPTERS)
EXPECTED_TYPES = {"gpt2", "gptj", "gpt_neox", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2",
                  "gemma3_text", "olmo2", "phi3"}


@pytest.fixture(scope="module")
def toks():
    return {"bpe": offline_tokenizer("bpe"), "sentencepiece": offline_tokenizer("sentencepiece")}


@pytest.fixture(scope="module")
def models(toks):
    # Built once per module; the tests below restore any weight they change.
    out = {}
    for mt in ALL_TYPES:
        tok = toks["bpe" if mt in ("gpt2", "gptj", "gpt_neox") else "sentencepiece"]
        out[mt] = tiny_model(mt, tokenizer=tok)
    return out


def test_registry_covers_the_documented_architectures():
    assert EXPECTED_TYPES <= set(ADAPTERS)


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_every_path_resolves(models, model_type):
    model, _, adapter = models[model_type]
    assert adapter.model_type == model_type == model.config.model_type
    for kind in KINDS:
        layers = range(TINY["layers"]) if kind in LAYER_KINDS else [None]
        for layer in layers:
            module = adapter.module(model, kind, layer)
            assert isinstance(module, nn.Module), (kind, layer)
    # The paths point at the modules the model itself uses for these roles.
    assert adapter.module(model, "embed") is model.get_input_embeddings()
    assert adapter.module(model, "lm_head") is model.get_output_embeddings()
    assert adapter.block(model, 2) is adapter.block_list(model)[2]
    assert adapter.module(model, "block", 1) is model.get_submodule(adapter.path("block", 1))
    assert adapter.path("mlp_out", 3).startswith(adapter.layers + ".3.")


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_sizes(models, model_type):
    model, _, adapter = models[model_type]
    assert adapter.n_layers(model) == TINY["layers"]
    assert adapter.d_model(model) == TINY["hidden"]
    assert adapter.d_ff(model) == TINY["d_ff"]
    # The out × in view of the edited weight is [d, d_ff] whatever the storage.
    assert tuple(adapter.to_out_in(adapter.edit_weight(model, 0)).shape) == (TINY["hidden"], TINY["d_ff"])


def test_gpt2_stores_the_edited_weight_transposed(models):
    model, _, adapter = models["gpt2"]
    assert adapter.conv1d
    assert tuple(adapter.edit_weight(model, 0).shape) == (TINY["d_ff"], TINY["hidden"])
    model, _, adapter = models["llama"]
    assert not adapter.conv1d
    assert tuple(adapter.edit_weight(model, 0).shape) == (TINY["hidden"], TINY["d_ff"])


@pytest.mark.parametrize("model_type", ALL_TYPES)
def test_update_orientation_changes_output_by_delta_times_key(models, model_type):
    """Adding to_stored(Δ) to W must change mlp_out(k) by exactly Δ @ k."""
    model, _, adapter = models[model_type]
    layer = 1
    module = adapter.mlp_out_module(model, layer)
    weight = adapter.edit_weight(model, layer)
    g = torch.Generator().manual_seed(0)
    keys = torch.randn(5, TINY["d_ff"], generator=g, dtype=torch.float64)
    delta = torch.randn(TINY["hidden"], TINY["d_ff"], generator=g, dtype=torch.float64)
    saved = weight.detach().clone()
    module.double()
    try:
        before = module(keys)
        with torch.no_grad():
            weight.add_(adapter.to_stored(delta, weight))
        after = module(keys)
        torch.testing.assert_close(after - before, keys @ delta.T, rtol=1e-9, atol=1e-9)
        assert torch.equal(adapter.to_out_in(adapter.to_stored(delta, weight)), delta)
    finally:
        module.float()
        with torch.no_grad():
            weight.copy_(saved)


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
def test_to_stored_rejects_a_wrong_shape(models, model_type):
    model, _, adapter = models[model_type]
    weight = adapter.edit_weight(model, 0)
    # The stored orientation itself is the wrong input (unless the weight is square).
    with pytest.raises(ValueError, match="does not match"):
        adapter.to_stored(torch.zeros(TINY["d_ff"], TINY["hidden"]), weight)


@pytest.mark.parametrize("bad", [-1, TINY["layers"], 100])
def test_layer_range_is_checked(models, bad):
    model, _, adapter = models["llama"]
    with pytest.raises(IndexError, match=rf"outside the model's {TINY['layers']} layers \(0\.\.{TINY['layers'] - 1}\)"):
        adapter.block(model, bad)
    with pytest.raises(IndexError, match="outside"):
        adapter.module(model, "mlp_out", bad)
    with pytest.raises(IndexError, match="outside"):
        adapter.edit_weight(model, bad)


def test_path_needs_a_layer_and_a_known_kind():
    adapter = ADAPTERS["llama"]
    assert adapter.path("mlp_out", 7) == "model.layers.7.mlp.down_proj"
    assert adapter.path("final_norm") == "model.norm"
    with pytest.raises(ValueError, match="needs a layer"):
        adapter.path("mlp_out")
    with pytest.raises(ValueError, match="unknown module kind 'down'.*mlp_out"):
        adapter.path("down", 0)


def test_unknown_model_type_lists_supported_and_how_to_add():
    with pytest.raises(UnsupportedModelError) as info:
        get_adapter("mamba")
    message = str(info.value)
    assert "'mamba'" in message
    for mt in EXPECTED_TYPES:
        assert mt in message
    assert "register_adapter" in message and "ModelAdapter(" in message


def test_unknown_model_type_of_a_model_object(models):
    model = models["llama"].model
    original = model.config.model_type
    model.config.model_type = "not_a_real_type"
    try:
        with pytest.raises(UnsupportedModelError, match="not_a_real_type"):
            get_adapter(model)
    finally:
        model.config.model_type = original


def test_an_adapter_that_does_not_fit_fails_early(models):
    model = models["llama"].model
    wrong = ModelAdapter("llama", layers="model.layers", mlp="mlp", mlp_out="mlp.c_proj", attn="self_attn",
                         attn_out="self_attn.o_proj", final_norm="model.norm", lm_head="embed_out",
                         embed="model.embed_tokens")
    with pytest.raises(UnsupportedModelError) as info:
        wrong.check(model)
    assert "mlp_out='model.layers.0.mlp.c_proj'" in str(info.value)
    assert "lm_head='embed_out'" in str(info.value)
    # A wrong orientation flag would silently transpose every update.
    flipped = dataclasses.replace(ADAPTERS["gpt2"], conv1d=False)
    with pytest.raises(UnsupportedModelError, match="conv1d=False"):
        flipped.check(models["gpt2"].model)


def test_register_adapter_adds_a_new_type(models):
    custom = dataclasses.replace(ADAPTERS["llama"], model_type="my_llama_variant")
    try:
        assert register_adapter(custom) is custom
        assert get_adapter("my_llama_variant") is custom
        custom.check(models["llama"].model)  # same layout: fits
    finally:
        ADAPTERS.pop("my_llama_variant", None)
