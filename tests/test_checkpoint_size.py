"""Checkpoints store the keys behind K_p K_pᵀ instead of the d_ff² float64 matrix, and a
loaded state rebuilds the matrix bit for bit: resume stays exact. Keys that would outgrow
the matrix are folded into it; version-1 states (the matrices) still load; a failed batch
leaves the key lists as they were."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_engine_helpers import corpus, fresh, random_edits, store, twin

from editprobe.editing import make_editor
from editprobe.editing.lte.preserved import PreservedKeys
from editprobe.editing.lte.state import STATE_VERSION, StateError


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _editor(method, lm, stats):
    return make_editor(method, lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())


def _resumed(method, lm, stats, directory):
    """A fresh editor on ``lm`` loading ``directory`` the way a resumed run does."""
    editor = _editor(method, lm, stats)
    editor.prepare()  # C0 (and projectors) from the unedited model, as RunDir resume does
    editor.load_state(directory)
    return editor


def _assert_same(a, b):
    """Same deltas, same K_p K_pᵀ, same key lists and base, bit for bit."""
    assert a.layers == b.layers
    for layer in a.layers:
        assert torch.equal(a.deltas[layer], b.deltas[layer]), layer
        assert a.preserved(layer).dtype == torch.float64
        assert torch.equal(a.preserved(layer), b.preserved(layer)), layer
        ka, kb = a.preserved_keys.keys(layer), b.preserved_keys.keys(layer)
        assert len(ka) == len(kb) and all(torch.equal(x, y) for x, y in zip(ka, kb)), layer
        assert (a.preserved_keys.base(layer) is None) == (b.preserved_keys.base(layer) is None), layer


def _payload(editor) -> int:
    return sum(t.nbytes for t in editor.preserved_keys.tensors().values())


def _matrix_bytes(editor) -> int:
    return sum(editor.preserved(l).nbytes for l in editor.layers)


# ---------------------------------------------------------------- (a) exact resume from keys


@pytest.mark.parametrize("method", ["memit", "alphaedit"])
def test_keys_rebuild_the_matrix_bit_for_bit_and_resume_is_exact(stats, tmp_path, method):
    batches = [random_edits(4, seed=40 + i, prefix=f"b{i}") for i in range(4)]
    lm = fresh("llama")
    editor = _editor(method, lm, stats)
    for batch in batches[:3]:
        editor.apply(batch)
    d_ff = editor.preserved(editor.layers[0]).shape[0]
    for layer in editor.layers:
        keys = editor.preserved_keys.keys(layer)
        # exactly the tensors after_batch multiplied: fp32, on the CPU, one per batch
        assert [tuple(k.shape) for k in keys] == [(d_ff, 4)] * 3
        assert all(k.dtype == torch.float32 and k.device.type == "cpu" for k in keys)
        assert editor.preserved_keys.base(layer) is None
    editor.save_state(tmp_path / "ckpt", include_stats=False)

    meta = json.loads((tmp_path / "ckpt" / "state.json").read_text())
    assert meta["version"] == STATE_VERSION == 2
    assert meta["preserved"] == {str(l): {"base": False, "keys": 3} for l in editor.layers}
    saved = load_file(tmp_path / "ckpt" / "preserved.safetensors")
    assert sorted(saved) == sorted(f"cpkeys.{l}.{i}" for l in editor.layers for i in range(3))

    other = twin("llama")
    loaded = _resumed(method, other, stats, tmp_path / "ckpt")
    _assert_same(loaded, editor)
    # The 4th batch: the resumed editor and the one that never stopped give identical deltas.
    editor.apply(batches[3])
    loaded.apply(batches[3])
    _assert_same(loaded, editor)

    # A checkpoint that lost a key tensor is refused, naming it, and leaves the editor alone.
    save_file({k: v for k, v in saved.items() if k != f"cpkeys.{editor.layers[0]}.2"},
              tmp_path / "ckpt" / "preserved.safetensors")
    with pytest.raises(StateError, match=rf"cpkeys\.{editor.layers[0]}\.2"):
        loaded.load_state(tmp_path / "ckpt")
    _assert_same(loaded, editor)


# ---------------------------------------------------------------- (b) size and the fold


def test_checkpoint_is_smaller_than_the_matrix_and_folds_when_keys_outgrow_it(stats, tiny, tmp_path):
    d_ff = 32  # fold at 2 * d_ff = 64 key columns per layer
    lm = tiny("llama", intermediate_size=d_ff)
    twin_lm = tiny("llama", intermediate_size=d_ff, tokenizer=lm.tokenizer)
    batches = [random_edits(24, seed=50 + i, prefix=f"b{i}") for i in range(5)]
    editor = _editor("memit", lm, stats)
    matrix_bytes = len(editor.layers) * d_ff * d_ff * 8

    editor.apply(batches[0])
    editor.apply(batches[1])  # 48 columns: 48 * 32 * 4 = 6144 B per layer < 8192 B
    editor.save_state(tmp_path / "keys", include_stats=False)
    size = (tmp_path / "keys" / "preserved.safetensors").stat().st_size
    assert size < matrix_bytes, (size, matrix_bytes)
    assert _payload(editor) == len(editor.layers) * 48 * d_ff * 4
    loaded = _resumed("memit", tiny("llama", intermediate_size=d_ff, tokenizer=lm.tokenizer), stats, tmp_path / "keys")
    _assert_same(loaded, editor)

    editor.apply(batches[2])  # 72 columns >= 64: the matrix becomes the base, the keys go
    for layer in editor.layers:
        assert editor.preserved_keys.keys(layer) == []
        assert editor.preserved_keys.base(layer) is editor.preserved(layer)
    assert _payload(editor) == matrix_bytes
    editor.save_state(tmp_path / "folded", include_stats=False)
    meta = json.loads((tmp_path / "folded" / "state.json").read_text())
    assert meta["preserved"] == {str(l): {"base": True, "keys": 0} for l in editor.layers}
    assert sorted(load_file(tmp_path / "folded" / "preserved.safetensors")) == [f"cpbase.{l}" for l in editor.layers]

    editor.apply(batches[3])  # after a fold every batch folds: never more than the matrix
    assert _payload(editor) == matrix_bytes and all(editor.preserved_keys.keys(l) == [] for l in editor.layers)
    editor.save_state(tmp_path / "after", include_stats=False)
    loaded = _resumed("memit", twin_lm, stats, tmp_path / "after")
    _assert_same(loaded, editor)
    editor.apply(batches[4])
    loaded.apply(batches[4])
    _assert_same(loaded, editor)


# ---------------------------------------------------------------- (c) version 1


def test_a_version_1_checkpoint_still_loads_and_resumes_exactly(stats, tmp_path):
    batches = [random_edits(4, seed=60 + i, prefix=f"b{i}") for i in range(3)]
    lm = fresh("llama")
    editor = _editor("memit", lm, stats)
    editor.apply(batches[0])
    editor.apply(batches[1])
    directory = tmp_path / "v1"
    editor.save_state(directory, include_stats=False)
    # What version 1 wrote: the matrices as cp.<layer>, no "preserved" entry.
    meta = json.loads((directory / "state.json").read_text())
    del meta["preserved"]
    meta["version"] = 1
    (directory / "state.json").write_text(json.dumps(meta))
    save_file({f"cp.{l}": editor.preserved(l).contiguous() for l in editor.layers}, directory / "preserved.safetensors")

    loaded = _resumed("memit", twin("llama"), stats, directory)
    for layer in editor.layers:
        assert torch.equal(loaded.deltas[layer], editor.deltas[layer])
        assert torch.equal(loaded.preserved(layer), editor.preserved(layer))
        assert loaded.preserved_keys.keys(layer) == [] and loaded.preserved_keys.base(layer) is not None
    editor.apply(batches[2])
    loaded.apply(batches[2])
    for layer in editor.layers:
        assert torch.equal(loaded.deltas[layer], editor.deltas[layer])
        assert torch.equal(loaded.preserved(layer), editor.preserved(layer))
    # Saved again, it is a version-2 state holding the matrix only (as large as version 1's).
    loaded.save_state(tmp_path / "v2", include_stats=False)
    assert sorted(load_file(tmp_path / "v2" / "preserved.safetensors")) == [f"cpbase.{l}" for l in loaded.layers]
    again = _resumed("memit", twin("llama"), stats, tmp_path / "v2")
    _assert_same(again, loaded)

    meta["version"] = 3
    (directory / "state.json").write_text(json.dumps(meta))
    with pytest.raises(StateError, match="version 3"):
        _editor("memit", twin("llama"), stats).load_state(directory)


# ---------------------------------------------------------------- (d) rollback and restore


def test_a_failed_batch_leaves_the_key_lists_as_they_were(stats, monkeypatch):
    first, second = random_edits(4, seed=70, prefix="a"), random_edits(4, seed=71, prefix="b")
    lm = fresh("llama")
    reference = _editor("memit", lm, stats)
    reference.apply(first)
    reference.apply(second)

    lm = fresh("llama")
    editor = _editor("memit", lm, stats)
    editor.apply(first)
    before = {l: (editor.preserved_keys.keys(l), editor.preserved(l)) for l in editor.layers}
    layer_one, layer_two = editor.layers
    add = PreservedKeys.add

    def failing_add(self, layer, keys):  # the first layer's keys are added, the second's fail
        if layer == layer_two:
            raise RuntimeError("out of memory")
        add(self, layer, keys)

    monkeypatch.setattr(PreservedKeys, "add", failing_add)
    with pytest.raises(RuntimeError, match="out of memory"):
        editor.apply(second)
    monkeypatch.setattr(PreservedKeys, "add", add)
    for layer, (keys, matrix) in before.items():
        assert len(editor.preserved_keys.keys(layer)) == 1
        assert all(a is b for a, b in zip(editor.preserved_keys.keys(layer), keys))
        assert editor.preserved(layer) is matrix
    editor.apply(second)
    _assert_same(editor, reference)

    editor.restore()
    assert len(editor.preserved_keys) == 0 and editor.preserved_keys.tensors() == {} and editor.preserved_keys.meta() == {}
