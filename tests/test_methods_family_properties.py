"""The step that defines each of RECT, PRUNE, PMET, AdaEdit, NAMET and MEMIT-LTI, checked on
the trained tiny model: each test fails if that step is missing or done differently."""

from __future__ import annotations

import math

import pytest
import torch
from test_engine_helpers import all_weights, corpus, fresh, random_edits, store, twin

from editprobe.editing import make_editor
from editprobe.editing.lte.methods.adaedit import adaedit_factors
from editprobe.editing.lte.methods.lti import teacher_prefix, teacher_rows
from editprobe.editing.lte.methods.pmet import PMETTargetOptimizer
from editprobe.editing.lte.methods.prune import restrain
from editprobe.editing.lte.methods.rect import rect_mask, rect_scores
from editprobe.editing.prompts import rewrite_rows
from editprobe.models.hooks import capture
from editprobe.models.tokens import char_span_of_subject, encode, make_batch


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _editor(method: str, stats, overrides: dict | None = None, lm=None):
    lm = lm or fresh("llama")
    return lm, make_editor(method, lm.model, lm.tokenizer, "tiny", overrides=overrides, stats=stats, corpus=corpus())


def _spy(editor, name: str) -> list:
    """Record (layer, argument, result) of ``editor.<name>(layer, x)`` calls."""
    calls, original = [], getattr(editor, name)

    def wrapped(layer, *args):
        out = original(layer, *args)
        calls.append((layer, args[-1].clone(), out.clone()))
        return out

    setattr(editor, name, wrapped)
    return calls


# ---------------------------------------------------------------- RECT


def test_rect_writes_only_the_top_fraction_by_the_configured_score(stats):
    masks = {}
    for score in ("relative", "absolute"):
        lm, editor = _editor("rect", stats, {"rect_score": score})
        before = all_weights(lm.model)
        raw = _spy(editor, "solve")
        editor.apply(random_edits(20, seed=0))
        for layer, _, delta in raw:
            W = lm.adapter.to_out_in(before[f"{lm.adapter.path('mlp_out', layer)}.weight"])
            written = lm.adapter.to_out_in(editor.deltas[layer])
            kept = written != 0
            assert int(kept.sum()) == round(0.2 * written.numel())  # the kept fraction, exactly
            assert torch.equal(written[kept], delta[kept])  # kept entries are unchanged
            s = rect_scores(delta, W, score)
            assert float(s[kept].min()) >= float(s[~kept].max())  # ... and are the top scores
            masks[score, layer] = rect_mask(delta, W, 0.2, score)
    # The two scores keep different entries (on the first layer both see the same Δ and W).
    assert not torch.equal(masks["relative", 1], masks["absolute", 1])


# ---------------------------------------------------------------- PRUNE


def test_prune_finalize_maps_singular_values_as_specified_once(stats, tmp_path):
    lm, editor = _editor("prune", stats)  # tiny: log base 1.2, final
    before = all_weights(lm.model)
    editor.apply(random_edits(20, seed=0))
    raw = {l: d.clone() for l, d in editor.deltas.items()}
    editor.finalize()
    alpha = 1.2
    for layer, d in raw.items():
        xi = float(torch.linalg.matrix_norm(before[f"{lm.adapter.path('mlp_out', layer)}.weight"].double(), ord=2))
        s = torch.linalg.svdvals(d.double())
        s_new = torch.linalg.svdvals(editor.deltas[layer].double())
        rank = int((s > max(d.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
        over = s[:rank] > xi
        assert over.any()  # the restraint is exercised, not vacuous
        expected = torch.where(over, xi + torch.log(s[:rank] / xi) / math.log(alpha), s[:rank])
        assert torch.allclose(s_new[:rank], expected, rtol=1e-4)
        assert float(s_new[0]) < float(s[0])
        assert rank == len(s) or float(s_new[rank:].max()) < 1e-4 * float(s_new[0])  # rank(Δ) components only
    # Idempotent: a second finalize changes nothing, also after a save/load round trip.
    weights = all_weights(lm.model)
    assert editor.finalize() == {}
    assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in weights.items())
    editor.save_state(tmp_path / "state", include_stats=False)
    other = twin("llama")
    loaded = make_editor("prune", other.model, other.tokenizer, "tiny", stats=stats, corpus=corpus())
    loaded.load_state(tmp_path / "state")
    assert loaded.finalized and loaded.finalize() == {}
    for layer in editor.layers:
        assert torch.equal(lm.adapter.edit_weight(other.model, layer), lm.adapter.edit_weight(lm.model, layer))
    # A new batch makes the next finalize act again.
    editor.apply(random_edits(3, seed=5, prefix="more"))
    assert not editor.finalized and set(editor.finalize()) == set(editor.layers)


def test_prune_per_batch_restrains_each_update_against_the_current_weight(stats):
    lm, editor = _editor("prune", stats, {"prune_apply_at": "per_batch", "prune_reduce": "log"})
    currents = []
    original = editor.postprocess

    def post(layer, delta):  # the weight the update is restrained against, before writing
        w = lm.adapter.to_out_in(lm.adapter.edit_weight(lm.model, layer)).double()
        currents.append((layer, delta.clone(), float(torch.linalg.matrix_norm(w, ord=2)), original(layer, delta)))
        return currents[-1][-1]

    editor.postprocess = post
    for i in range(2):
        editor.apply(random_edits(5, seed=i, prefix=f"b{i}"))
    assert len(currents) == 4 and currents[2][2] != currents[0][2]  # ξ follows the edited weight
    for _, delta, xi, out in currents:
        s = torch.linalg.svdvals(delta.double())
        rank = int((s > max(delta.shape) * torch.finfo(torch.float32).eps * s[0]).sum())
        expected = restrain(s[:rank], xi, "log", strict=False)
        assert (s[:rank] >= xi).any()
        assert torch.allclose(torch.linalg.svdvals(out.double())[:rank], expected, rtol=1e-4)


# ---------------------------------------------------------------- PMET


def _bare_mlp_outputs(lm, requests, layer: int) -> torch.Tensor:
    """MLP output at ``layer``, subject's last token of each bare query: ``[d, n]``."""
    from editprobe.models.tokens import subject_last_index

    ids, pos = [], []
    for req in requests:
        ids.append(encode(lm.tokenizer, req.query))
        pos.append(subject_last_index(lm.tokenizer, req.query, char_span_of_subject(req.template, req.subject)[1]))
    batch = make_batch(lm.tokenizer, ids, "right")
    path = lm.adapter.path("mlp", layer)
    with torch.no_grad(), capture(lm.model, [path]) as got:
        lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    return got[path][torch.arange(len(requests)), torch.tensor(pos)].float().T


def test_pmet_optimizes_two_vectors_spreads_the_mlp_residual_by_sqrt_and_writes_no_attention(stats):
    lm, editor = _editor("pmet", stats)
    requests = random_edits(5, seed=1)
    targets = editor.compute_targets(requests)
    assert set(targets.z) == {"attn_out", "mlp"}
    assert (targets.z["attn_out"] - targets.anchor["attn_out"]).norm(dim=-1).min() > 0  # δ_attn is optimized
    gap = targets.z["mlp"].T - _bare_mlp_outputs(lm, requests, editor.critical_layer)
    m = len(editor.layers)
    for i, layer in enumerate(editor.layers[:1]):
        _, R = editor.layer_inputs(requests, targets, i, layer)
        assert torch.allclose(R * math.sqrt(m - i), gap, atol=1e-4)  # √ spreading of the MLP gap
        assert not torch.allclose(R * (m - i), gap, atol=1e-2)  # not MEMIT's linear spreading
    before = all_weights(lm.model)
    editor.apply(requests)
    state = lm.model.state_dict()
    attn = [k for k in before if ".self_attn." in k]
    assert attn and all(torch.equal(state[k], before[k]) for k in attn)


@pytest.mark.parametrize("method, spread, power", [("pmet", "linear", 1.0), ("adaedit", "sqrt", 0.5)])
def test_pmet_and_adaedit_spread_the_residual_as_residual_spread_says(stats, method, spread, power):
    """``residual_spread`` overrides each method's default (PMET √, AdaEdit linear; FE's PMET
    spread linearly at the paper's commit: the paper-code profile)."""
    lm, editor = _editor(method, stats, {"residual_spread": spread})
    requests = random_edits(3, seed=1)
    targets = editor.compute_targets(requests)
    gap = targets.z["mlp"].T - _bare_mlp_outputs(lm, requests, editor.critical_layer)
    m = len(editor.layers)
    _, R = editor.layer_inputs(requests, targets, 0, editor.layers[0])
    assert torch.allclose(R * m**power, gap, atol=1e-4)
    assert not torch.allclose(R * m ** (1.5 - power), gap, atol=1e-2)  # not the method's default


def test_pmet_adaptive_nll_stops_requests_whose_target_is_top1(stats):
    lm, editor = _editor("pmet", stats)
    requests = random_edits(8, seed=2)
    settings = editor.target_settings()
    result = {}
    for adaptive in (True, False):
        opt = PMETTargetOptimizer(lm.model, lm.tokenizer, lm.adapter, settings)
        opt.adaptive = adaptive
        result[adaptive] = opt.run(requests, editor.templates().all)
    es, steps = settings.early_stop_loss, settings.steps
    # With the rule, some requests stop above the loss threshold (top-1 and KL small) ...
    ruled = [i for i, (l, s) in enumerate(zip(result[True].loss, result[True].steps)) if s < steps and l >= es]
    assert ruled
    # ... without it, a request stops early only below the threshold.
    assert all(l < es for l, s in zip(result[False].loss, result[False].steps) if s < steps)


# ---------------------------------------------------------------- AdaEdit


def test_adaedit_update_has_the_specified_rank_and_per_vector_sparsity(stats):
    lm, editor = _editor("adaedit", stats, {"adaedit_topr": 0.1})
    raw = _spy(editor, "postprocess")
    editor.apply(random_edits(20, seed=0))
    for layer, delta, out in raw:
        written = lm.adapter.to_out_in(editor.deltas[layer])
        assert torch.equal(written, out)
        d, d_ff = written.shape
        r = int(min(d, d_ff) * 0.1)
        # fp32 updates: rank up to a relative tolerance well above float32 rounding
        assert torch.linalg.matrix_rank(delta.double(), rtol=1e-5) == 20 > r  # the solve's rank: one per edit
        assert torch.linalg.matrix_rank(written.double(), rtol=1e-5) == r
        U, S, Vt = adaedit_factors(delta, 0.1, 0.6)
        assert U.shape == (d_ff, r) and Vt.shape == (r, d)
        assert ((U != 0).sum(0) == int(0.6 * d_ff)).all()  # each left vector: 60% of d_ff kept
        assert ((Vt != 0).sum(1) == int(0.6 * d)).all()  # each right vector: 60% of d kept
        assert float(U.norm()) == pytest.approx(math.sqrt(r)) and float(Vt.norm()) == pytest.approx(math.sqrt(r))
        assert torch.allclose(written, ((U * S) @ Vt).T.float(), atol=1e-5)


# ---------------------------------------------------------------- NAMET


def test_namet_left_pads_and_misaligns_officially_but_aligns_when_asked(stats):
    requests = random_edits(3, seed=0)
    lm = fresh("llama")
    for padding in ("official", "aligned"):
        _, editor = _editor("namet", stats, {"padding": padding}, lm=lm)
        templates = editor.templates().all
        opt = editor.target_optimizer()
        assert opt.s.padding_side == "left" and not opt.s.prefix_cache
        rb = opt.build_rows(requests, templates)
        ref = rewrite_rows(lm.tokenizer, requests, templates, editor.hp.kl_prompt)
        ids, width = rb.batch.input_ids, rb.batch.input_ids.shape[1]
        request_width = {}
        for row in ref:
            request_width[row.request] = max(request_width.get(row.request, 0), len(row.ids))
        misaligned = 0
        for i, (row, good) in enumerate(zip(rb.rows, ref)):
            pads = width - len(good.ids)
            assert rb.batch.attention_mask[i, :pads].sum() == 0 and rb.batch.attention_mask[i, pads:].all()
            subject_at = pads + good.subject_index  # where the subject's last token sits
            assert int(ids[i, subject_at]) == good.ids[good.subject_index]
            pos = rb.batch.position(i, row.subject_index)
            if padding == "aligned":
                assert pos == subject_at
            else:  # the unpadded index inside the request's own left-padded batch
                assert pos == good.subject_index + width - request_width[row.request]
                misaligned += pos != subject_at
            if row.kind == "rewrite":  # targets right-aligned: the last label sits on the last column
                assert rb.batch.position(i, row.target_positions[-1]) == width - 1
        assert (misaligned > 0) == (padding == "official")


# ---------------------------------------------------------------- MEMIT-LTI


def test_lti_teacher_reads_prefixed_rows_at_their_own_subject_and_targets(stats):
    lm, editor = _editor("memit_lti", stats)
    tok, model = lm.tokenizer, lm.model
    requests = random_edits(3, seed=4)
    templates = editor.templates().all
    student = {(r.request, r.kind, r.template): r for r in rewrite_rows(tok, requests, templates, "{} is a")}
    rows = teacher_rows(tok, requests, templates, "{} is a", "Imagine that ")
    for row in rows:
        if row.kind != "rewrite":
            continue
        req, tmpl = requests[row.request], templates[row.template]
        prefix = teacher_prefix(req) + tmpl[: tmpl.index("{}")]
        text = prefix + req.query
        end = len(prefix) + char_span_of_subject(req.template, req.subject)[1]  # after the prefix's own subject
        start_char, end_char = tok(text, return_offsets_mapping=True)["offset_mapping"][row.subject_index]
        assert start_char <= end - 1 < end_char  # the token holding the subject's last character
        mine = student[(row.request, row.kind, row.template)]
        assert row.subject_index > mine.subject_index  # shifted by the prefix: not reused
        assert row.target_labels == mine.target_labels
        T = len(row.target_labels)
        assert row.target_positions == list(range(len(row.ids) - T, len(row.ids)))
    # The teacher's values equal a forward of each prefixed row on its own at those indices.
    opt = editor.target_optimizer()
    opt.run(requests, templates)
    mid_path = lm.adapter.path("block", editor.hp.lti_midlayer)
    for row in rows[:8]:
        key = (row.request, row.kind, row.template)
        with torch.no_grad(), capture(model, [mid_path]) as got:
            logits = model(input_ids=torch.tensor([row.ids])).logits[0]
        lens = opt.lens(got[mid_path][0, row.subject_index])
        assert torch.allclose(opt.teacher_mid[key], lens, atol=1e-4)
        pos = row.target_positions if row.kind == "rewrite" else [len(row.ids) - 1]
        assert torch.allclose(opt.teacher_out[key], torch.log_softmax(logits[pos].float(), -1), atol=1e-4)


def test_lti_teacher_terms_change_the_target(stats):
    lm, editor = _editor("memit_lti", stats)
    requests = random_edits(3, seed=4)
    with_teacher = editor.compute_targets(requests)
    _, plain = _editor("memit_lti", stats, {"lti_last_kl_factor": 0.0, "lti_mid_kl_factor": 0.0}, lm=lm)
    without = plain.compute_targets(requests)
    assert not torch.allclose(with_teacher.z["block"], without.z["block"], atol=1e-3)
