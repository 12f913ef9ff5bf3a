"""The target cache is hit only on an identical model state, batch and objective, and what
it returns is bit-identical to computing again."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store

from editprobe.editing import make_editor
from editprobe.editing.lte.negation_terms import negation_terms
from editprobe.editing.lte.target_cache import TargetCache, use_target_cache
from editprobe.editing.lte.targets import Site, TargetOptimizer, TargetSettings

TEMPLATES = ["{}", "The cat is. {}"]


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _optimizer(lm, **changes):
    settings = TargetSettings(**{"layer": 2, "sites": (Site("block", 4.0, 0.5),), "lr": 0.5, "steps": 5, **changes})
    return TargetOptimizer(lm.model, lm.tokenizer, lm.adapter, settings)


def _same(a, b):
    for kind in a.z:
        assert torch.equal(a.z[kind], b.z[kind]) and torch.equal(a.anchor[kind], b.anchor[kind])
    assert (a.loss, a.nll, a.steps, a.target_prob) == (b.loss, b.nll, b.steps, b.target_prob)


def test_hit_only_on_identical_state_and_settings(tmp_path):
    lm = fresh("llama")
    requests = random_edits(3, seed=0)
    cache = TargetCache(tmp_path)
    first = cache.run(_optimizer(lm), requests, TEMPLATES)
    again = cache.run(_optimizer(lm), requests, TEMPLATES)
    assert (cache.stats.misses, cache.stats.hits) == (1, 1)
    _same(first, again)
    assert cache.stats.saved_s == pytest.approx(first.seconds)

    def misses(run) -> bool:
        before = cache.stats.misses
        run()
        return cache.stats.misses == before + 1

    assert misses(lambda: cache.run(_optimizer(lm), requests, ["{}", "The dog is. {}"]))  # a template
    assert misses(lambda: cache.run(_optimizer(lm, lr=0.4), requests, TEMPLATES))  # a setting
    assert misses(lambda: cache.run(_optimizer(lm), requests[::-1], TEMPLATES))  # the batch's order
    other = [requests[0].model_copy(update={"target": requests[1].target}), *requests[1:]]
    assert misses(lambda: cache.run(_optimizer(lm), other, TEMPLATES))  # a request
    assert misses(lambda: cache.run(_optimizer(lm), requests, TEMPLATES, seed=1))  # the seed
    defend = _optimizer(lm)
    defend.loss_terms = negation_terms(1.0, 0.0625)
    with_opposite = [r.model_copy(update={"opposite_template": r.template.replace("{}", "{} not")}) for r in requests]
    assert misses(lambda: cache.run(defend, with_opposite, TEMPLATES))  # a loss term
    # a changed weight anywhere in the model (here below the edit layer's start) misses
    with torch.no_grad():
        lm.model.get_submodule(lm.adapter.path("mlp_out", 0)).weight[0, 0] += 1e-3
    fresh_result = cache.run(_optimizer(lm), requests, TEMPLATES)
    assert cache.stats.hits == 1
    assert not torch.equal(fresh_result.z["block"], first.z["block"])
    with torch.no_grad():  # back to the first state: the first entry is found again
        lm.model.get_submodule(lm.adapter.path("mlp_out", 0)).weight[0, 0] -= 1e-3
    assert torch.equal(cache.run(_optimizer(lm), requests, TEMPLATES).z["block"], first.z["block"])
    assert cache.stats.hits == 2


def test_undescribed_objectives_are_not_cached(tmp_path):
    class Custom(TargetOptimizer):  # a method's own objective it does not describe
        pass

    lm = fresh("llama")
    cache = TargetCache(tmp_path)
    opt = Custom(lm.model, lm.tokenizer, lm.adapter, dataclasses.replace(_optimizer(lm).s))
    cache.run(opt, random_edits(2, seed=0), TEMPLATES)
    cache.run(opt, random_edits(2, seed=0), TEMPLATES)
    assert cache.stats.skipped == 2 and cache.stats.hits == 0
    assert not any(tmp_path.rglob("*.safetensors"))


def test_unreadable_entry_is_recomputed(tmp_path):
    lm = fresh("llama")
    requests = random_edits(2, seed=0)
    cache = TargetCache(tmp_path)
    first = cache.run(_optimizer(lm), requests, TEMPLATES)
    (entry,) = tmp_path.rglob("*.safetensors")
    entry.write_bytes(b"not a safetensors file")
    with pytest.warns(UserWarning, match="damaged cache entry"):
        _same(first, cache.run(_optimizer(lm), requests, TEMPLATES))
    assert cache.stats.misses == 2


def test_a_nan_entry_is_named_and_recomputed_and_a_failed_write_is_a_warning(tmp_path, monkeypatch):
    import editprobe.editing.lte.target_cache as target_cache
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import save_file

    lm = fresh("llama")
    requests = random_edits(2, seed=0)
    cache = TargetCache(tmp_path)
    first = cache.run(_optimizer(lm), requests, TEMPLATES)
    (entry,) = tmp_path.rglob("*.safetensors")
    with safe_open(str(entry), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    tensors["z.block"][1, 3] = float("nan")
    save_file(tensors, str(entry), metadata=meta)
    with pytest.warns(UserWarning, match=f"{entry}: damaged cache entry \\(z.block holds NaN or inf\\)"):
        _same(first, cache.run(_optimizer(lm), requests, TEMPLATES))
    assert cache.stats.misses == 2 and torch.isfinite(cache.load(entry.stem, "cpu").z["block"]).all()

    def full(*_a, **_k):  # what save_file raises when the disk is full
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(target_cache, "save_file", full)
    with pytest.warns(UserWarning, match="cannot write .*: No space left on device; the target cache is optional"):
        cache.run(_optimizer(lm), requests, ["{}", "The dog is. {}"])  # a miss, computed and returned
    assert cache.stats.misses == 3 and len(list(tmp_path.rglob("*.safetensors"))) == 1
    assert not list(tmp_path.rglob(".*"))


def test_second_method_reuses_the_first_batch_and_edits_identically(tmp_path, stats):
    # MEMIT and AlphaEdit share the objective: on the same unedited model AlphaEdit's first
    # batch is read from MEMIT's; its edit equals AlphaEdit's without the cache, bit for bit.
    requests = random_edits(6, seed=1)
    weights = {}
    for cached in (True, False):
        lm = fresh("llama")
        cache_root = tmp_path / "targets"
        if cached:
            memit = make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())
            use_target_cache(memit, root=cache_root)
            memit.apply(requests[:3])
            memit.restore()
        editor = make_editor("alphaedit", lm.model, lm.tokenizer, "tiny", stats=stats, corpus=corpus())
        cache = use_target_cache(editor, enabled=cached, root=cache_root)
        editor.apply(requests[:3])
        editor.apply(requests[3:])  # the model has changed: a miss
        if cached:
            assert (cache.stats.hits, cache.stats.misses) == (1, 1)
        else:
            assert cache is None
        weights[cached] = {k: v.clone() for k, v in lm.model.state_dict().items()}
    for k in weights[True]:
        assert torch.equal(weights[True][k], weights[False][k]), k
