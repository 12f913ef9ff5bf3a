"""Negation-aware LTE settings: the defend loss terms (by hand and on a trained tiny model),
last-token keys, variant labels and the request and settings checks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_engine_helpers import corpus, fresh, n_exact, random_edits, store

from editprobe.data.records import EditRequest
from editprobe.editing import HParamsError, make_editor, resolve_hparams
from editprobe.editing.lte.keys import compute_keys
from editprobe.editing.lte.layout import full_layout
from editprobe.editing.lte.negation_terms import NegationKL, NegationUnlikelihood, with_opposite_template
from editprobe.editing.lte.objective import StepContext
from editprobe.editing.prompts import RequestError, Row, RowBatch
from editprobe.editing.lte.targets import Site, TargetOptimizer, TargetSettings
from editprobe.models.tiny import tiny_model
from editprobe.models.tokens import Batch, continuation_ids, encode

V = 7


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


class _IdentityHead(torch.nn.Module):
    """A 'model' whose LM head is the identity: hidden states are the logits."""

    config = SimpleNamespace()

    def get_output_embeddings(self):
        return torch.nn.Identity()


def _hand_made():
    """Two requests; request 0 has two opposite rows (templates 0 and 1), request 1 one
    (template 0), plus a rewriting row the terms must ignore."""
    rows = [
        Row(0, [1, 2, 3, 4], 1, [2, 3], [5, 6], "opposite", 0),
        Row(0, [1, 2, 3], 1, [2], [4], "opposite", 1),
        Row(1, [1, 2, 3, 4], 0, [1, 2], [3, 0], "opposite", 0),
        Row(1, [1, 2, 3], 0, [2], [6], "rewrite", 0),
    ]
    ids = torch.ones(4, 4, dtype=torch.long)
    layout = full_layout(RowBatch(rows, Batch(ids, torch.ones_like(ids), [4, 3, 4, 3], "right")), "cpu")
    model = _IdentityHead()
    ctx = StepContext(model=model, requests=[], templates=["{}", "x {}"], layout=layout, anchor={},
                      first_row=torch.tensor([0, 2]), row_values={}, reference={}, kl_p0=torch.zeros(2, V),
                      live_rows=torch.arange(4))
    return layout, ctx


def test_unlikelihood_is_minus_log_one_minus_p_by_hand():
    layout, ctx = _hand_made()
    hidden = torch.randn(4, 4, V, generator=torch.Generator().manual_seed(0), requires_grad=True)
    active = torch.tensor([0, 1])
    value = NegationUnlikelihood(1.0)(layout, hidden, active, ctx)
    p = torch.softmax(hidden.detach(), -1)
    ul = lambda r, pos, y: -torch.log(1 - p[r, pos, y])  # noqa: E731
    expected0 = (ul(0, 2, 5) + ul(0, 3, 6) + ul(1, 2, 4)) / 3  # every opposite target token of request 0
    expected1 = (ul(2, 1, 3) + ul(2, 2, 0)) / 2
    torch.testing.assert_close(value, torch.stack([expected0, expected1]), rtol=1e-5, atol=1e-6)
    # d(−log(1 − p_y))/dz = p_y / (1 − p_y) · (e_y − p), here for request 1's first token
    value[1].backward()
    z = p[2, 1]
    grad = (z[3] / (1 - z[3])) * (torch.nn.functional.one_hot(torch.tensor(3), V) - z) / 2
    torch.testing.assert_close(hidden.grad[2, 1], grad, rtol=1e-4, atol=1e-6)
    assert hidden.grad[3].abs().sum() == 0  # the rewriting row is not the term's business


def test_unlikelihood_holds_requests_above_its_threshold():
    term = NegationUnlikelihood(1.0, hold=0.05)
    assert term.hold(torch.tensor([0.2, 0.01])).tolist() == [True, False]
    assert NegationUnlikelihood(1.0).hold(torch.tensor([0.2])) is None


def test_negation_kl_is_zero_at_delta_zero_and_kl_by_hand_otherwise():
    layout, ctx = _hand_made()
    hidden0 = torch.randn(4, 4, V, generator=torch.Generator().manual_seed(1))
    term = NegationKL(1.0)
    term.prepare(layout, hidden0, ctx)
    at_zero = hidden0.clone().requires_grad_(True)
    value = term(layout, at_zero, torch.tensor([0, 1]), ctx)
    assert value.abs().max() < 1e-6
    value.sum().backward()
    assert at_zero.grad.abs().max() < 1e-6  # a minimum: no pull at δ = 0
    moved = hidden0 + torch.randn(4, 4, V, generator=torch.Generator().manual_seed(2))
    value = term(layout, moved, torch.tensor([0, 1]), ctx)
    logp, logq = torch.log_softmax(moved, -1), torch.log_softmax(hidden0, -1)
    kl = lambda r, pos: (logp[r, pos].exp() * (logp[r, pos] - logq[r, pos])).sum()  # noqa: E731
    # only the bare template's opposite row (template 0) of each request
    expected = torch.stack([(kl(0, 2) + kl(0, 3)) / 2, (kl(2, 1) + kl(2, 2)) / 2])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)


def _prob(model, tok, template: str, subject: str, target: str) -> float:
    query = template.format(subject)
    t = continuation_ids(tok, query, target)
    q = encode(tok, query)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([q + t[:-1]])).logits[0, len(q) - 1:]
    return float(torch.log_softmax(logits.float(), -1)[torch.arange(len(t)), t].mean().exp())


def test_defend_lowers_the_opposite_querys_target_probability(stats):
    # The tiny model's templates end with the subject. With "not" before the subject the
    # subject's key sees it but stays close to the positive one, so plain MEMIT carries the
    # new target into the negated query; defend pays some target probability to keep it out.
    requests = [r.model_copy(update={"opposite_template": "not " + r.template}) for r in random_edits(10, seed=3)]
    result = {}
    for overrides in ({}, {"negation": "defend", "negation_unlikelihood": 0.3}):
        lm = fresh("llama")
        editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", overrides, stats=stats, corpus=corpus())
        editor.apply(requests)
        p_neg = [_prob(lm.model, lm.tokenizer, r.opposite_template, r.subject, r.target) for r in requests]
        result[bool(overrides)] = (n_exact(lm.model, lm.tokenizer, requests), sum(p_neg) / len(p_neg))
    (exact_plain, neg_plain), (exact_defend, neg_defend) = result[False], result[True]
    assert neg_plain > 0.5  # the leak exists
    assert neg_defend < neg_plain - 0.15
    # the edits still land (defend: 10 of 10 on torch 2.13, 7 on torch 2.6, whose sampler draws
    # other context templates for the same seed)
    assert exact_plain >= 9 and exact_defend >= 7


def test_last_token_keys_differ_for_p_and_not_p_where_subject_keys_are_equal(stats):
    lm = fresh("llama")
    editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())
    positive = EditRequest(id="p", subject="Alice", template="The mother tongue of {} is", target="French")
    negated = positive.model_copy(update={"id": "n", "template": "The mother tongue of {} is not"})
    keys = {}
    for locate in ("subject", "last-token"):
        k, h = compute_keys(lm.model, lm.tokenizer, lm.adapter, [positive, negated], editor.templates(),
                            editor.layers, hcur_layer=editor.critical_layer, locate=locate)
        keys[locate] = (k, h)
    for layer in editor.layers:
        k = keys["subject"][0][layer]
        torch.testing.assert_close(k[:, 0], k[:, 1])
        k = keys["last-token"][0][layer]
        assert (k[:, 0] - k[:, 1]).norm() > 0.1 * k[:, 0].norm()
    torch.testing.assert_close(keys["subject"][1][:, 0], keys["subject"][1][:, 1])
    assert not torch.allclose(keys["last-token"][1][:, 0], keys["last-token"][1][:, 1])


def test_prefix_cache_matches_full_rows_with_last_token_and_defend():
    torch.set_num_threads(1)
    m, tok, adapter = tiny_model("llama", initializer_range=0.2)
    requests = [EditRequest(id="0", subject="Danielle Darrieux", template="The mother tongue of {} is", target="English"),
                EditRequest(id="1", subject="Michael Jordan", template="{} plays", target="piano football")]
    from editprobe.editing.lte.negation_terms import negation_terms

    results = {}
    for cached in (False, True):
        settings = TargetSettings(layer=1, sites=(Site("block", 4.0, 0.5),), lr=0.1, steps=5, prefix_cache=cached,
                                  locate="last-token")
        opt = TargetOptimizer(m, tok, adapter, settings, negation_terms(1.0, 0.5, hold=0.05))
        results[cached] = opt.run(requests, ["{}", "The cat is. {}"])
    full, cached = results[False], results[True]
    torch.testing.assert_close(cached.z["block"], full.z["block"], rtol=1e-4, atol=1e-4)
    for name in ("negation_unlikelihood", "negation_kl"):
        assert cached.terms[name] == pytest.approx(full.terms[name], rel=1e-3, abs=1e-6)
    assert cached.forward_tokens < full.forward_tokens


LTE_METHODS = ["adaedit", "alphaedit", "emmet", "memit", "memit_lti", "namet", "pmet", "prune", "rect", "rome"]


@pytest.mark.parametrize("locate", ["subject", "last-token"])
@pytest.mark.parametrize("method", LTE_METHODS)
def test_every_lte_method_edits_with_defend(method, locate, stats):
    lm = fresh("llama")
    overrides = {"negation": "defend", "locate": locate}
    editor = make_editor(method, lm.model, lm.tokenizer, "tiny", overrides, stats=stats, corpus=corpus())
    assert editor.variant() == ("defend" if locate == "subject" else "defend+last-token")
    requests = [r.model_copy(update={"opposite_template": r.template + " not"}) for r in random_edits(2, seed=11)]
    report = editor.apply(requests[:1] if method == "rome" else requests)
    assert all(torch.isfinite(torch.tensor(r.loss)) for r in report.requests)
    assert editor.deltas


def test_variant_labels(stats):
    lm = fresh("llama")
    labels = {}
    for overrides in ({}, {"negation": "defend"}, {"locate": "last-token"}, {"negation": "defend", "locate": "last-token"}):
        labels[tuple(overrides.values())] = make_editor("memit", lm.model, lm.tokenizer, "tiny", overrides,
                                                        stats=stats, corpus=corpus()).variant()
    assert labels == {(): None, ("defend",): "defend", ("last-token",): "last-token",
                      ("defend", "last-token"): "defend+last-token"}


@pytest.mark.parametrize("field,value", [("negation", "on"), ("locate", "middle"), ("negation_kl", -1.0)])
def test_bad_settings_are_one_line_errors(field, value):
    with pytest.raises(HParamsError) as info:
        resolve_hparams("memit", "tiny", {field: value})
    message = str(info.value)
    assert field in message and "\n" not in message


def test_a_template_without_a_negation_is_refused_before_any_work(stats):
    lm = fresh("llama")
    editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", {"negation": "defend"}, stats=stats,
                         corpus=corpus())
    fine = EditRequest(id="ok", subject="Alice", template="The mother tongue of {} is", target="French")
    bad = EditRequest(id="cannot-negate", subject="Bob", template="The mother tongue of {}", target="German")
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with pytest.raises(RequestError, match="request cannot-negate: .*cannot be negated"):
        editor.apply([fine, bad])
    assert editor._templates is None and not editor.deltas  # nothing was computed
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
    # Given explicitly, the opposite template is used as it is; else the rules fill it.
    assert with_opposite_template(bad.model_copy(update={"opposite_template": "{} not"})).opposite_template == "{} not"
    assert with_opposite_template(fine).opposite_template == "The mother tongue of {} is not"
