"""Properties of the engine's pieces: batched target optimization equals one request at a
time, the replayed forward equals a full forward, and each method's written update has
the structure its closed form promises (null space, equality constraint, rank one)."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store

from editprobe.editing import make_editor
from editprobe.editing.lte.keys import compute_keys
from editprobe.models.resume_forward import block_output_arity, final_hidden, resume_from
from editprobe.editing.lte.targets import Site, TargetOptimizer, TargetSettings
from editprobe.models.hooks import capture, edit_output
from editprobe.models.tokens import encode, make_batch


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# ---------------------------------------------------------------- batched target optimization


@pytest.mark.parametrize(
    "site, weight_decay, kl_factor",
    [("block", 0.0, 0.0), ("mlp", 0.01, 0.0625)],
    ids=["block-nll-only", "mlp-with-kl-and-decay"],
)
def test_batched_targets_equal_one_request_at_a_time(site, weight_decay, kl_factor, stats):
    lm = fresh("llama")
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    templates = make_editor("memit", model, tok, "tiny", stats=stats, corpus=corpus()).templates().all
    requests = random_edits(5, seed=3)
    settings = TargetSettings(layer=2, sites=(Site(site, 4.0, weight_decay),), lr=0.5, steps=25,
                              kl_factor=kl_factor, early_stop_loss=0.05 if kl_factor == 0 else 0.1)
    batched = TargetOptimizer(model, tok, adapter, settings).run(requests, templates)
    alone = [TargetOptimizer(model, tok, adapter, settings).run([r], templates) for r in requests]

    steps_alone = [a.steps[0] for a in alone]
    assert batched.steps == steps_alone
    # Requests stop at different steps, so the batch really shrinks on the way.
    assert len(set(steps_alone)) > 1 and min(steps_alone) < settings.steps
    for i, a in enumerate(alone):
        assert _rel(batched.z[site][i], a.z[site][0]) < 1e-4, requests[i].id
        assert _rel(batched.anchor[site][i], a.anchor[site][0]) < 1e-5
        assert batched.loss[i] == pytest.approx(a.loss[0], rel=1e-3, abs=1e-5)
        assert batched.target_prob[i] == pytest.approx(a.target_prob[0], rel=1e-3)
        assert a.target_prob[0] > 0.5  # the optimization did something
        assert not torch.equal(a.z[site][0], a.anchor[site][0])


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gptj"])
def test_replay_equals_full_forward_with_the_same_delta(model_type, tiny):
    torch.set_num_threads(1)
    lm = tiny(model_type, seed=1)
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    texts = ["The birthplace of Alice", "Bob", "The mother tongue of Danielle Darrieux is"]
    batch = make_batch(tok, [encode(tok, t) for t in texts], "right")
    assert len(set(batch.lengths)) == 3  # padding is in play
    layer = 1
    block = adapter.block(model, layer)
    with torch.no_grad(), capture(model, [adapter.path("block", layer)]) as got:
        arity = block_output_arity(block, lambda: final_hidden(model, batch))
        plain = final_hidden(model, batch)
    assert arity == (2 if model_type == "gptj" else 0)  # GPT-J blocks return tuples
    h_layer = got[adapter.path("block", layer)]
    rows, pos = torch.arange(3), torch.tensor([2, 0, 4])
    delta = torch.randn(3, h_layer.shape[-1], generator=torch.Generator().manual_seed(0), requires_grad=True)

    def add(h):
        h = h.clone()
        h[rows, pos] = h[rows, pos] + delta
        return h

    with edit_output(block, add):
        full = final_hidden(model, batch)
    calls = []
    lower = adapter.block(model, 0).register_forward_hook(lambda *a: calls.append(1))
    try:
        with resume_from(model, adapter, layer, arity, lambda _ignored: add(h_layer)):
            replayed = final_hidden(model, batch)
    finally:
        lower.remove()
    assert calls == []  # the blocks below were skipped, not re-run
    # The original blocks are back in place.
    assert adapter.block(model, layer) is block and all(type(b) is type(block) for b in adapter.block_list(model))
    mask = batch.attention_mask.bool()
    assert torch.allclose(replayed[mask], full[mask], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(full[mask], plain[mask], atol=1e-3)  # the delta matters
    # Gradients with respect to the delta agree too (target optimization relies on them).
    (g_full,) = torch.autograd.grad(full[mask].square().sum(), delta)
    (g_replay,) = torch.autograd.grad(replayed[mask].square().sum(), delta)
    assert torch.allclose(g_replay, g_full, atol=1e-4, rtol=1e-4)
    with torch.no_grad(), resume_from(model, adapter, layer, arity, lambda _ignored: h_layer):
        assert torch.allclose(final_hidden(model, batch)[mask], plain[mask], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- update structure


def _spy_solves(editor, monkeypatch) -> dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    seen = {}
    original = editor.solve

    def spy(layer, K, R):
        delta = original(layer, K, R)
        seen[layer] = (K.clone(), R.clone(), delta.clone())
        return delta

    monkeypatch.setattr(editor, "solve", spy)
    return seen


def test_alphaedit_update_lies_in_the_null_space_of_preserved_keys(stats):
    lm = fresh("llama")
    model, tok = lm.model, lm.tokenizer
    first, second = random_edits(10, seed=1, prefix="a"), random_edits(10, seed=2, prefix="b")
    # On this tiny model the official absolute threshold (2e-2) keeps 122 of 128 directions,
    # where even MEMIT's update already lies; the energy rule keeps a subspace that tells
    # the two apart.
    nullspace = {"nullspace_mode": "energy", "nullspace_threshold": 0.01}
    editor = make_editor("alphaedit", model, tok, "tiny", overrides=nullspace, stats=stats, corpus=corpus())
    editor.apply(first)
    editor.apply(second)  # the accumulated update, K_p K_pᵀ included, stays in the null space
    for layer in editor.layers:
        P, C0 = editor.projector(layer).double(), editor.covariance(layer).double()
        info = editor.nullspace[layer]
        assert 0 < info.dim < 0.8 * C0.shape[0]  # a proper subspace, so the check below can fail
        assert float(torch.trace(P)) == pytest.approx(info.dim, abs=1e-3)
        delta = editor.deltas[layer].double()  # llama: [d, d_ff], Δ acts on keys from the right
        assert float(delta.norm()) > 0
        assert float((delta - delta @ P).norm()) <= 1e-5 * float(delta.norm())
        # Preserved keys are (almost) untouched: ‖Δ C0‖ is bounded by C0's largest
        # eigenvalue inside the null space, far below its largest overall.
        top_null = float(torch.linalg.eigvalsh(P @ C0 @ P)[-1])
        assert top_null < 0.1 * float(torch.linalg.eigvalsh(C0)[-1])
        assert float((delta @ C0).norm()) <= 1.001 * top_null * float(delta.norm())
    # Contrast: MEMIT's update for the same edits is not confined to that subspace.
    editor.restore()
    memit = make_editor("memit", model, tok, "tiny", stats=stats, corpus=corpus())
    memit.apply(first)
    for layer in memit.layers:
        P, delta = editor.projector(layer).double(), memit.deltas[layer].double()
        assert float((delta - delta @ P).norm()) > 0.02 * float(delta.norm())


@pytest.mark.parametrize("mu", [0.0, 0.1], ids=["no-ridge", "official-ridge"])
def test_emmet_meets_its_equality_constraint_on_the_batch_keys(mu, stats, monkeypatch):
    lm = fresh("llama")
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    requests = random_edits(8, seed=4)
    editor = make_editor("emmet", model, tok, "tiny", overrides={"emmet_lambda": mu}, stats=stats, corpus=corpus())
    seen = _spy_solves(editor, monkeypatch)
    editor.apply(requests)
    assert sorted(seen) == editor.layers
    for layer in editor.layers:
        K, R, delta = (t.double() for t in seen[layer])
        # The keys the solve got are the engine's keys at that layer before its write (a
        # layer's own update does not change its input; only lower layers' updates do).
        keys, _ = compute_keys(model, tok, adapter, requests, editor.templates(), [layer])
        assert _rel(K, keys[layer].double()) < 1e-5
        assert torch.equal(editor.deltas[layer], seen[layer][2])  # what was solved was written
        met = delta @ K
        if mu == 0:
            assert _rel(met, R) < 1e-5
        else:
            # With the ridge the constraint holds as Δ K = R D (D + μ I)⁻¹, D = Kᵀ C̃⁻¹ K.
            C = editor.hp.lam(layer) * editor.covariance(layer).double()
            D = K.T @ torch.linalg.solve(C, K)
            expected = R @ D @ torch.linalg.inv(D + mu * torch.eye(len(requests), dtype=D.dtype))
            assert _rel(met, expected) < 1e-5
            assert 1e-6 < _rel(met, R) < 0.5  # the ridge relaxes the constraint, a little


def test_rome_update_is_rank_one_and_maps_the_key_to_the_target(stats, monkeypatch):
    lm = fresh("llama")
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    req, other = random_edits(2, seed=5)
    editor = make_editor("rome", model, tok, "tiny", stats=stats, corpus=corpus())
    targets = []
    original = editor.compute_targets
    monkeypatch.setattr(editor, "compute_targets", lambda reqs: targets.append(original(reqs)) or targets[-1])
    editor.apply([req])
    (layer,) = editor.layers
    s = torch.linalg.svdvals(editor.deltas[layer].double())
    assert s[0] > 0 and s[1] <= 1e-6 * s[0]
    # ROME's constraint: the bare prompt's key now gives the optimized value v* = z.
    from editprobe.editing.prompts import batch_rows, key_rows

    rb = batch_rows(tok, key_rows(tok, [req], ["{}"]))
    with torch.no_grad(), capture(model, [adapter.path("mlp", layer)]) as got:
        model(input_ids=rb.batch.input_ids)
    out = got[adapter.path("mlp", layer)][0, rb.rows[0].subject_index]
    assert _rel(out, targets[0].z["mlp"][0]) < 1e-4
    editor.apply([other])  # deltas accumulate: two rank-one updates
    s = torch.linalg.svdvals(editor.deltas[layer].double())
    assert s[1] > 1e-3 * s[0] and s[2] <= 1e-6 * s[0]


# ---------------------------------------------------------------- prompt rows


def test_subject_index_with_escaped_braces_in_the_template(tiny):
    # "{{" is one character once formatted: the subject must be found in the formatted text.
    tok = tiny("llama").tokenizer
    from editprobe.data.records import EditRequest
    from editprobe.editing.prompts import key_rows, rewrite_rows
    from editprobe.models.tokens import subject_last_index

    req = EditRequest(id="b", subject="Alice", template="The {{x}} birthplace of {} is", target="Paris")
    text = "The {x} birthplace of Alice is"
    expected = subject_last_index(tok, text, text.index("Alice") + len("Alice"))
    assert tok.convert_ids_to_tokens(encode(tok, text)[expected]).endswith("ice")
    for prefix in ("{}", "Because I. {}"):
        key = key_rows(tok, [req], [prefix])[0]
        shift = len(encode(tok, prefix.format(text))) - len(encode(tok, text))
        assert key.subject_index == expected + shift
        rewrite = rewrite_rows(tok, [req], [prefix], kl_prompt=None)[0]
        assert rewrite.subject_index == key.subject_index
