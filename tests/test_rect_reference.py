"""RECT's reference mode (issue 24, item 5): the update is spread unmasked and masked only
after every layer read its keys, so the keys the solves read above the first edit layer are
those of a model that never exists. K_p K_pᵀ must receive the keys of the model the batch
leaves: one more key pass per batch, in that mode only; resume stays exact."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store, twin

import editprobe.editing.lte.engine as engine
from editprobe.editing import make_editor
from editprobe.editing.lte.keys import compute_keys

REFERENCE = {"rect_mode": "reference", "rect_keep": 0.4}  # the paper profile's RECT


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _editor(lm, stats, overrides):
    return make_editor("rect", lm.model, lm.tokenizer, "tiny", overrides=overrides, stats=stats, corpus=corpus())


def _batches(n: int = 3):
    return [random_edits(4, seed=60 + b, prefix=f"b{b}") for b in range(n)]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_reference_mode_stores_the_edited_models_keys_in_k_p(stats):
    lm = fresh("llama")
    editor = _editor(lm, stats, REFERENCE)
    first, upper = editor.layers[0], editor.layers[1:]
    for b, batch in enumerate(_batches()):
        torch.manual_seed(b)
        editor.apply(batch)
        # a fresh key pass (the engine's own computation) on the model this batch left
        true, _ = compute_keys(lm.model, lm.tokenizer, lm.adapter, batch, editor.templates(), editor.layers)
        for layer in editor.layers:
            stored = editor.preserved_keys.keys(layer)
            assert len(stored) == b + 1 and editor.preserved_keys.base(layer) is None  # no fold: every batch's keys kept
            assert torch.equal(stored[b], true[layer]), (b, layer)
        # What the solves read (and what K_p held before the fix): right at the first edit
        # layer, nothing below it changed; above it, read below the unmasked update.
        solved = editor._insert_keys
        assert torch.equal(solved[first], true[first])
        for layer in upper:
            assert _relative(solved[layer], true[layer]) > 0.1, (b, layer)  # measured 0.28-0.76
    # every batch's keys, not only the last: the matrix is their replayed sum
    for layer in editor.layers:
        keys = torch.cat(editor.preserved_keys.keys(layer), dim=1).double()
        assert torch.allclose(editor.preserved(layer), keys @ keys.T, rtol=1e-10, atol=1e-10)


def test_only_reference_mode_pays_one_more_key_pass_per_batch(stats, monkeypatch):
    passes = []

    def counted(*args, **kwargs):
        passes.append(1)
        return compute_keys(*args, **kwargs)

    monkeypatch.setattr(engine, "compute_keys", counted)
    counts = {}
    for mode in ("in_loop", "reference"):
        lm = fresh("llama")
        editor = _editor(lm, stats, {**REFERENCE, "rect_mode": mode})
        passes.clear()
        for b, batch in enumerate(_batches(2)):
            torch.manual_seed(b)
            editor.apply(batch)
        counts[mode] = len(passes)
    n_layers = len(editor.layers)
    assert counts == {"in_loop": 2 * n_layers, "reference": 2 * (n_layers + 1)}


def test_a_reference_mode_state_resumes_exactly(stats, tmp_path):
    batches = _batches()
    lm = fresh("llama")
    editor = _editor(lm, stats, REFERENCE)
    for b, batch in enumerate(batches[:2]):
        torch.manual_seed(b)
        editor.apply(batch)
    editor.save_state(tmp_path / "state", include_stats=False)
    other = twin("llama")
    loaded = _editor(other, stats, REFERENCE)
    loaded.prepare()  # C0 from the unedited model, as a resumed run does
    loaded.load_state(tmp_path / "state")
    for runner in (editor, loaded):
        torch.manual_seed(2)
        runner.apply(batches[2])
    for layer in editor.layers:
        assert torch.equal(loaded.deltas[layer], editor.deltas[layer]), layer
        assert torch.equal(loaded.preserved(layer), editor.preserved(layer)), layer
        ka, kb = loaded.preserved_keys.keys(layer), editor.preserved_keys.keys(layer)
        assert len(ka) == len(kb) == 3 and all(torch.equal(x, y) for x, y in zip(ka, kb)), layer
