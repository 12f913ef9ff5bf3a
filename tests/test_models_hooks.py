"""Scoped hooks: capture, truncation, edits, and cleanup on error."""

from __future__ import annotations

import pytest
import torch

from editprobe.models import encode
from editprobe.models.hooks import StopForward, capture, edit_input, edit_output, first_tensor, run_until_stop
from editprobe.models.tiny import tiny_model

PROMPT = "The mother tongue of Danielle Darrieux is"
ARCHS = ["llama", "gpt2", "gptj", "gpt_neox", "qwen3"]


def _ids(tok) -> torch.Tensor:
    return torch.tensor([encode(tok, PROMPT)])


def _n_hooks(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _block_return_kind(model, adapter, ids) -> str:
    seen = []
    handle = adapter.block(model, 0).register_forward_hook(lambda mod, a, out: seen.append(type(out).__name__))
    try:
        model(ids)
    finally:
        handle.remove()
    return seen[0]


def test_blocks_return_tensors_or_tuples_as_expected():
    """The case split capture must handle exists in the pinned transformers."""
    kinds = {}
    for mt in ("llama", "gpt2", "gptj"):
        model, tok, adapter = tiny_model(mt)
        kinds[mt] = _block_return_kind(model, adapter, _ids(tok))
    assert kinds["llama"] == "Tensor"
    assert kinds["gptj"] == "tuple"  # so both branches of first_tensor are exercised below
    assert kinds["gpt2"] in ("Tensor", "tuple")


@pytest.mark.parametrize("model_type", ARCHS)
def test_capture_block_outputs_match_hidden_states(model_type):
    model, tok, adapter = tiny_model(model_type)
    ids = _ids(tok)
    paths = [adapter.path("block", layer) for layer in range(adapter.n_layers(model) - 1)]
    with capture(model, paths) as store:
        out = model(ids, output_hidden_states=True)
    assert list(store) == paths
    for layer, path in enumerate(paths):
        # hidden_states[l + 1] is block l's output (the last one is post-norm, hence -1 above)
        torch.testing.assert_close(store[path], out.hidden_states[layer + 1])
        assert store[path].shape == (1, ids.shape[1], adapter.d_model(model))
        assert not store[path].requires_grad


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_capture_input_of_mlp_out_is_the_down_projection_input(model_type):
    model, tok, adapter = tiny_model(model_type)
    ids = _ids(tok)
    layer = 2
    path_in = adapter.path("mlp_out", layer)
    with capture(model, [path_in], what="input") as ins, capture(model, [path_in], what="output") as outs:
        model(ids)
    key = ins[path_in]
    assert key.shape == (1, ids.shape[1], adapter.d_ff(model))
    # Feeding the captured input through the projection gives its captured output.
    torch.testing.assert_close(adapter.mlp_out_module(model, layer)(key), outs[path_in])


def test_capture_rejects_a_bad_what():
    model, _, adapter = tiny_model("llama")
    with pytest.raises(ValueError, match="'input' or 'output'"):
        with capture(model, [adapter.path("block", 0)], what="inputs"):
            pass


@pytest.mark.parametrize("model_type", ["llama", "gptj"])
def test_stop_after_truncates_the_pass(model_type):
    model, tok, adapter = tiny_model(model_type)
    ids = _ids(tok)
    later_ran = []
    later = adapter.block(model, 3).register_forward_hook(lambda *a: later_ran.append(True))
    head_ran = []
    head = adapter.module(model, "lm_head").register_forward_hook(lambda *a: head_ran.append(True))
    try:
        stop = adapter.path("block", 1)
        with capture(model, [adapter.path("mlp_out", 0)], what="input", stop_after=stop) as store:
            result = run_until_stop(lambda: model(ids))
        assert result is None
        assert later_ran == [] and head_ran == []
        assert list(store) == [adapter.path("mlp_out", 0)]  # the stop module is not recorded
        # Without a stop, the same hooks do fire: the check above can fail.
        model(ids)
        assert later_ran == [True] and head_ran == [True]
    finally:
        later.remove()
        head.remove()
    assert _n_hooks(model) == 0


def test_stop_after_in_paths_records_it_then_stops():
    model, tok, adapter = tiny_model("llama")
    stop = adapter.path("block", 2)
    with capture(model, [adapter.path("block", 0), stop], stop_after=stop) as store:
        with pytest.raises(StopForward):
            model(_ids(tok))
    assert set(store) == {adapter.path("block", 0), stop}


@pytest.mark.parametrize("model_type", ["llama", "gptj"])
def test_edit_output_changes_the_logits_and_is_undone(model_type):
    model, tok, adapter = tiny_model(model_type)
    ids = _ids(tok)
    base = model(ids).logits
    block = adapter.block(model, 1)
    # A random direction: a constant shift would vanish in LayerNorm's mean subtraction.
    shift = torch.randn(adapter.d_model(model), generator=torch.Generator().manual_seed(0))
    with edit_output(block, lambda h: h + shift):
        edited = model(ids).logits
        with capture(model, [adapter.path("block", 1)]) as store:
            model(ids)
    assert not torch.allclose(edited, base, atol=1e-3)
    # Downstream hooks see the edited value, not the original one.
    with capture(model, [adapter.path("block", 1)]) as plain:
        model(ids)
    torch.testing.assert_close(store[adapter.path("block", 1)], plain[adapter.path("block", 1)] + shift)
    torch.testing.assert_close(model(ids).logits, base)
    assert _n_hooks(model) == 0


def test_edit_input_of_mlp_out_equals_editing_its_output():
    """Scaling the key by 0 at the down projection zeroes that MLP's contribution."""
    model, tok, adapter = tiny_model("llama")
    ids = _ids(tok)
    down = adapter.mlp_out_module(model, 1)
    with edit_input(down, torch.zeros_like):
        via_input = model(ids).logits
    with edit_output(down, torch.zeros_like):
        via_output = model(ids).logits
    torch.testing.assert_close(via_input, via_output)
    assert not torch.allclose(via_input, model(ids).logits, atol=1e-4)
    assert _n_hooks(model) == 0


def test_edit_input_reaches_a_keyword_hidden_state():
    model, tok, adapter = tiny_model("llama")
    ids = _ids(tok)
    block = adapter.block(model, 0)
    x = model.get_input_embeddings()(ids)
    kwargs = dict(position_embeddings=model.model.rotary_emb(x, torch.arange(ids.shape[1])[None]))
    positional = block(x * 2, **kwargs)
    with edit_input(block, lambda h: h * 2):
        keyword = block(hidden_states=x, **kwargs)
    torch.testing.assert_close(first_tensor(keyword), first_tensor(positional))


@pytest.mark.parametrize("context", ["capture", "edit_output", "edit_input"])
def test_hooks_are_removed_when_the_forward_raises(context):
    model, tok, adapter = tiny_model("llama")
    ids = _ids(tok)

    def boom(*_):
        raise RuntimeError("boom")

    broken = adapter.block(model, 2).register_forward_hook(boom)
    managers = {
        "capture": lambda: capture(model, [adapter.path("block", 0), adapter.path("mlp_out", 1)], what="input"),
        "edit_output": lambda: edit_output(adapter.block(model, 0), lambda h: h),
        "edit_input": lambda: edit_input(adapter.mlp_out_module(model, 1), lambda h: h),
    }
    with pytest.raises(RuntimeError, match="boom"):
        with managers[context]():
            assert _n_hooks(model) > 1  # ours and the broken one
            model(ids)
    broken.remove()
    assert _n_hooks(model) == 0


def test_first_tensor_accepts_tensor_tuple_and_list_only():
    t = torch.zeros(2)
    assert first_tensor(t) is t
    assert first_tensor((t, None)) is t
    assert first_tensor([t]) is t
    with pytest.raises(TypeError, match="dict"):
        first_tensor({"x": t})
    with pytest.raises(TypeError):
        first_tensor(())
