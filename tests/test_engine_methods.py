"""Each method, end to end through ``make_editor``, on a tiny model trained to recall facts:
random counterfactual edits must become the model's exact (teacher-forced argmax) answer,
and only the edit layers' MLP output projections may change."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import all_weights, corpus, exact, fresh, n_exact, random_edits, store

from editprobe.data.records import EditRequest
from editprobe.editing import make_editor
from editprobe.models.tiny import tiny_facts

N_EDITS = 20
MIN_EXACT = 18  # >= 90%


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _only_edit_layers_changed(model, adapter, before: dict, layers: list[int]) -> None:
    edited = {f"{adapter.path('mlp_out', l)}.weight" for l in layers}
    state = model.state_dict()
    changed = {k for k, v in before.items() if not torch.equal(state[k], v)}
    assert changed == edited, f"changed {sorted(changed)}, expected exactly {sorted(edited)}"


def test_trained_tiny_model_knows_its_facts_and_not_the_edits():
    # The premise of every efficacy test below: before editing, the model answers the true
    # objects and none of the random new targets.
    lm = fresh("llama")
    facts = tiny_facts()
    known = [EditRequest(id=f"f{i}", subject=s, template=t, target=o) for i, (t, s, o) in enumerate(facts)]
    assert n_exact(lm.model, lm.tokenizer, known) >= 0.95 * len(known)
    assert n_exact(lm.model, lm.tokenizer, random_edits(N_EDITS, seed=0)) == 0


@pytest.mark.parametrize("method", ["memit", "emmet", "alphaedit"])
def test_batch_methods_make_random_edits_exact(method, stats):
    lm = fresh("llama")
    model, tok = lm.model, lm.tokenizer
    requests = random_edits(N_EDITS, seed=0)
    before = all_weights(model)
    editor = make_editor(method, model, tok, "tiny", stats=stats, corpus=corpus())
    report = editor.apply(requests)

    hits = n_exact(model, tok, requests)
    assert hits >= MIN_EXACT, f"{method}: {hits}/{N_EDITS} edits exact"
    _only_edit_layers_changed(model, lm.adapter, before, editor.layers)
    # The report describes this batch: every request, every layer, in order.
    assert [r.id for r in report.requests] == [r.id for r in requests]
    assert [l.layer for l in report.layers] == editor.layers == [1, 2]
    assert all(l.update_norm > 0 and l.residual_norm > 0 for l in report.layers)
    assert all(1 <= r.steps <= editor.hp.v_num_grad_steps for r in report.requests)
    assert sum(r.target_prob > 0.5 for r in report.requests) >= MIN_EXACT
    for layer in editor.layers:
        # The written weight is the original plus the accumulated delta, nothing else.
        expected = before[f"{lm.adapter.path('mlp_out', layer)}.weight"] + editor.deltas[layer]
        assert torch.equal(lm.adapter.edit_weight(model, layer), expected)
        assert float(editor.deltas[layer].norm()) == pytest.approx(report.layers[layer - 1].update_norm, rel=1e-5)


def test_rome_makes_each_edit_exact_right_after_it(stats):
    # ROME edits one fact at a time with a rank-one update that preserves only C0, not the
    # earlier edits: on this tiny model, sequential ROME loses about a third of its earlier
    # edits by the 20th (a known ROME property, not what this test is about). So each edit
    # is checked right after it is applied; decay of older edits is allowed.
    lm = fresh("llama")
    model, tok = lm.model, lm.tokenizer
    requests = random_edits(N_EDITS, seed=0)
    before = all_weights(model)
    editor = make_editor("rome", model, tok, "tiny", stats=stats, corpus=corpus())
    hits = 0
    for i, req in enumerate(requests):
        report = editor.apply([req])
        assert report.batch == i and report.n_requests == 1 and report.requests[0].id == req.id
        hits += exact(model, tok, req)
    assert hits >= MIN_EXACT, f"rome: {hits}/{N_EDITS} edits exact right after they were made"
    _only_edit_layers_changed(model, lm.adapter, before, [1])
    assert list(editor.deltas) == [1]


def test_memit_on_gpt2_writes_conv1d_orientation_and_edits(stats):
    # GPT-2's Conv1D stores c_proj as [d_ff, d]: the update must be transposed into it.
    # Targets are one token: the tiny BPE tokenizer splits some objects into up to six
    # pieces (" London" -> "Ġ L on d on"), whose later tokens a 4-layer GPT-2 reads from
    # the subject only through attention; target optimization cannot reach those.
    lm = fresh("gpt2")
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    requests = random_edits(N_EDITS, seed=0, tok=tok)
    assert n_exact(model, tok, requests) == 0
    before = all_weights(model)
    editor = make_editor("memit", model, tok, "tiny", stats=stats, corpus=corpus())
    editor.apply(requests)

    hits = n_exact(model, tok, requests)
    assert hits >= MIN_EXACT, f"memit on gpt2: {hits}/{N_EDITS} edits exact"
    _only_edit_layers_changed(model, adapter, before, editor.layers)
    d, d_ff = model.config.n_embd, model.config.n_inner
    assert d != d_ff  # otherwise a transposed update would fit too
    for layer in editor.layers:
        weight = model.transformer.h[layer].mlp.c_proj.weight
        assert tuple(weight.shape) == (d_ff, d)
        assert tuple(editor.deltas[layer].shape) == (d_ff, d)
        assert torch.equal(weight, before[f"transformer.h.{layer}.mlp.c_proj.weight"] + editor.deltas[layer])


def test_memit_edits_with_layer_0_alone(stats):
    # Keys at layer 0 stop the forward inside block 0, so its output (and arity) is never
    # seen; that once raised an IndexError in the key replay.
    lm = fresh("llama")
    requests = random_edits(5, seed=0)
    editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", {"layers": [0]}, stats=stats, corpus=corpus())
    editor.apply(requests)
    assert editor.layers == [0]
    assert n_exact(lm.model, lm.tokenizer, requests) >= 4


def test_a_model_that_records_gradients_is_edited_and_left_so(stats):
    # from_config models train by default; the target search must not tie its steps' graphs
    # to the weights (once: "backward through the graph a second time").
    lm = fresh("llama")  # the session's shared model: its flags are put back after
    lm.model.requires_grad_(True)
    try:
        requests = random_edits(5, seed=0)
        make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus()).apply(requests)
        assert n_exact(lm.model, lm.tokenizer, requests) >= 4
        assert all(p.requires_grad for p in lm.model.parameters())
    finally:
        lm.model.requires_grad_(False)
