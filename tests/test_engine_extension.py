"""The engine's extension points: loss-term objects, the per-request mean, master_weight, the
editor's state parts (ledger, statistics source, preserved keys), the per-request mode, solve
without C0, and hook cleanup in the target search."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store

from editprobe.editing import make_editor
from editprobe.editing.lte.methods.adaedit import AdaEditEditor
from editprobe.editing.lte.methods.memit import MEMITEditor
from editprobe.editing.lte.objective import BaseLossTerm, LossTerms, per_request_mean, per_request_sums
from editprobe.editing.ledger import WeightLedger
from editprobe.editing.lte.preserved import PreservedKeys
from editprobe.editing.lte.state import StateError
from editprobe.editing.lte.stats_source import StatsSource
from editprobe.editing.lte.targets import Site, TargetOptimizer, TargetSettings


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


class SquaredHidden(BaseLossTerm):
    """A toy term: per request, the mean squared final hidden state at its rewriting rows'
    target positions."""

    name = "squared_hidden"

    def __init__(self, factor: float):
        self.factor = factor

    def __call__(self, rb, hidden, active, ctx):
        local = {int(r): i for i, r in enumerate(active.tolist())}
        rows = [i for i, row in enumerate(rb.rows) if row.kind == "rewrite"]
        pos = [rb.batch.position(i, rb.rows[i].target_positions[0]) for i in rows]
        values = hidden[rows, pos].pow(2).mean(-1)
        return per_request_mean(values, torch.tensor([local[rb.rows[i].request] for i in rows]), len(active))


def _settings(steps: int, sites=("block",)) -> TargetSettings:
    return TargetSettings(layer=2, sites=tuple(Site(k, 4.0, 0.5) for k in sites), lr=0.5, steps=steps)


def test_per_request_mean_and_sums():
    values = torch.tensor([1.0, 2.0, 3.0, 5.0])
    request = torch.tensor([0, 0, 1, 1])
    assert per_request_mean(values, request, 3).tolist() == [1.5, 4.0, 0.0]
    total, count = per_request_sums(values, request, 3, counts=torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert total.tolist() == [3.0, 8.0, 0.0] and count.tolist() == [1.0, 2.0, 0.0]


def test_a_loss_term_is_added_with_its_factor_and_recorded():
    lm = fresh("llama")
    requests, templates = random_edits(3, seed=5), ["{}", "Because I. {}"]
    plain = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(1)).run(requests, templates)
    term = SquaredHidden(0.25)
    with_term = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(1), [term]).run(requests, templates)
    # One step (δ = 0): the loss is the engine's plus factor · value, per request.
    values = with_term.terms["squared_hidden"]
    assert len(values) == 3 and all(v > 0 for v in values)
    for base, total, v in zip(plain.loss, with_term.loss, values):
        assert total == pytest.approx(base + 0.25 * v, rel=1e-5)
    # A term changes the search; with factor 0 it changes nothing at all.
    moved = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(8), [SquaredHidden(5.0)]).run(
        requests, templates)
    base8 = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(8)).run(requests, templates)
    zero = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(8), [SquaredHidden(0.0)]).run(
        requests, templates)
    assert torch.equal(zero.z["block"], base8.z["block"])
    assert not torch.allclose(moved.z["block"], base8.z["block"], atol=1e-3)


def test_hold_keeps_a_request_going_even_against_a_method_stop():
    lm = fresh("llama")
    opt = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(5))
    loss = torch.tensor([0.0, 0.0, 1.0, 1.0])
    terms = LossTerms(nll=loss, kl=loss, top1=loss > 0, stop=torch.tensor([False, True, True, False]),
                      hold=torch.tensor([False, True, False, False]))
    assert opt._continues(loss, terms, step=0).tolist() == [False, True, False, True]
    assert not opt._continues(loss, terms, step=4).any()  # the step budget ends every request


def test_a_failing_hook_leaves_the_model_blocks_as_they_were(monkeypatch):
    import editprobe.editing.lte.targets as targets_module

    lm = fresh("llama")
    blocks = list(lm.adapter.block_list(lm.model))

    @contextmanager
    def broken(module, fn):
        raise RuntimeError("hook failed on enter")
        yield

    monkeypatch.setattr(targets_module, "edit_output", broken)
    # mlp/attn_out sites: the steps replay from the block below, then enter the output hooks.
    opt = TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, _settings(2, ("mlp", "attn_out")))
    with pytest.raises(RuntimeError, match="hook failed"):
        opt.run(random_edits(2, seed=6), ["{}"])
    after = list(lm.adapter.block_list(lm.model))
    assert len(after) == len(blocks) and all(a is b for a, b in zip(after, blocks))
    assert not any(m._forward_hooks for m in lm.model.modules())


def test_master_weight_is_original_plus_deltas(stats):
    lm = fresh("llama")
    editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())
    untouched = lm.adapter.edit_weight(lm.model, 0).detach().float().clone()
    originals = {l: lm.adapter.edit_weight(lm.model, l).detach().float().clone() for l in editor.layers}
    editor.apply(random_edits(3, seed=7))
    for layer in editor.layers:
        assert torch.equal(editor.master_weight(layer), originals[layer] + editor.deltas[layer])
    assert torch.equal(editor.master_weight(0), untouched)


def test_the_editor_state_is_made_of_its_parts(stats):
    lm = fresh("llama")
    editor = make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())
    assert isinstance(editor.ledger, WeightLedger) and isinstance(editor.stats_source, StatsSource)
    assert isinstance(editor.preserved_keys, PreservedKeys)
    editor.apply(random_edits(2, seed=7))
    assert editor.ledger.edited() == editor.layers and editor.deltas == editor.ledger.deltas
    assert editor.preserved_keys.layers() == editor.layers
    # C0 describes the unedited model: the source refuses to read it once the ledger holds edits
    fresh_source = StatsSource(lm.model, lm.tokenizer, lm.adapter, editor.hp, editor.model_id, editor.layers,
                               store=stats, corpus=corpus(), unedited=editor.ledger.is_empty)
    with pytest.raises(StateError, match="unedited model"):
        fresh_source.covariance(editor.layers[0])


class OneAtATime(MEMITEditor):
    per_request = True


def test_per_request_mode_equals_single_request_batches(stats):
    requests = random_edits(3, seed=8)
    overrides = {"preserve_previous": False}
    lm = fresh("llama")
    single = make_editor("memit", lm.model, lm.tokenizer, "tiny", overrides, stats=stats, corpus=corpus())
    for req in requests:
        single.apply([req])
    expected = {l: d.clone() for l, d in single.deltas.items()}

    lm = fresh("llama")
    hp = single.hp
    editor = OneAtATime(lm.model, lm.tokenizer, hp, stats=stats, corpus=corpus())
    report = editor.apply(requests)
    assert [r.id for r in report.requests] == [r.id for r in requests]
    assert [l.layer for l in report.layers] == editor.layers * 3
    for layer, delta in expected.items():
        assert torch.equal(editor.deltas[layer], delta)


def test_solve_runs_without_c0_where_the_method_needs_none(stats):
    assert "solve" not in AdaEditEditor.__dict__  # MEMIT's solve, told by needs_covariance
    lm = fresh("llama")
    editor = make_editor("adaedit", lm.model, lm.tokenizer, "tiny", {"use_covariance": False, "L2": 10.0},
                         stats=stats, corpus=corpus())
    assert editor.c0_for(editor.layers[0], "cpu") is None
    editor.apply(random_edits(2, seed=9))
    assert not any(editor.stats_source.has_covariance(l) for l in editor.layers)  # C0 was never computed
