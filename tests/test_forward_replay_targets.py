"""Forward-replay targets (FE, docs/methods/forward-replay.md) on the tiny trained Llama:
the later layers' targets are a forward pass with the first layer's optimized state patched
in (checked against plain hooks), each layer solves for its full z_l − h_l, spread is
unchanged, the wrong methods are refused in one line, a saved state resumes identically,
and the target cache never serves one construction's entries to the other."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store

from editprobe.editing import make_editor
from editprobe.editing.lte.forward_replay import CACHE_CONSTRUCTION
from editprobe.editing.lte.state import StateError
from editprobe.editing.lte.target_cache import TargetCache
from editprobe.editing.settings.hparams import HParamsError
from editprobe.report.compare import row_label

FE = {"targets": "forward-replay", "layers": [1, 2, 3]}


@pytest.fixture(scope="module")
def stats(tmp_path_factory):
    return store(tmp_path_factory)


def _editor(lm, stats, overrides=None, method="memit", **kwargs):
    return make_editor(method, lm.model, lm.tokenizer, "tiny", overrides=overrides, stats=stats, corpus=corpus(),
                       **kwargs)


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output  # a block's output, by transformers version


def _block_state(model, tok, requests, layer, patch=None):
    """By hand, with plain hooks: the block output of ``layer`` at each request's subject's
    last token of the bare prompt, with ``patch = (first, z)`` written over block ``first``'s
    output there first."""
    out = []
    blocks = model.model.layers
    for j, req in enumerate(requests):
        ids = tok(req.template.format(req.subject), return_tensors="pt").input_ids
        pos = len(tok(req.template[: req.template.index("{}")] + req.subject).input_ids) - 1
        seen, hooks = {}, []
        if patch is not None:
            first, z = patch

            def put(_m, _a, output, z=z[j]):
                _hidden(output)[0, pos] = z.to(output[0].dtype)  # in place: the same object goes on
                return output
            hooks.append(blocks[first].register_forward_hook(put))

        def read(_m, _a, output):
            seen["h"] = _hidden(output)[0, pos].float()
        hooks.append(blocks[layer].register_forward_hook(read))
        try:
            with torch.no_grad():
                model(ids)
        finally:
            for h in hooks:
                h.remove()
        out.append(seen["h"])
    return torch.stack(out)


def _recording(editor, lm):
    """Record each batch's targets and each solve's layer, residual and h_l by hand."""
    seen = {"targets": [], "solves": []}
    compute, solve = editor.compute_targets, editor.solve

    def compute_targets(requests):
        result = compute(requests)
        seen["targets"].append((requests, result))
        return result

    def record_solve(layer, K, R):
        requests = seen["targets"][-1][0]
        seen["solves"].append((layer, R.detach().clone(), _block_state(lm.model, lm.tokenizer, requests, layer)))
        return solve(layer, K, R)

    editor.compute_targets, editor.solve = compute_targets, record_solve
    return seen


def test_later_targets_are_a_forward_pass_with_the_first_layer_patched(stats):
    lm = fresh("llama")
    requests = random_edits(3, seed=1)
    editor = _editor(lm, stats, FE)
    assert editor.target_settings().layer == 1  # z is optimized at the first edit layer
    seen = {}
    compute = editor.compute_targets

    def compute_targets(reqs):
        result = compute(reqs)  # the model is still unedited here
        z1 = result.z["block"]
        seen.update({layer: _block_state(lm.model, lm.tokenizer, reqs, layer, patch=(1, z1)) for layer in (2, 3)})
        seen["result"] = result
        return result

    editor.compute_targets = compute_targets
    editor.apply(requests)
    by_layer = seen["result"].by_layer
    assert sorted(by_layer) == [1, 2, 3]
    assert torch.equal(by_layer[1], seen["result"].z["block"])
    for layer in (2, 3):
        assert torch.allclose(by_layer[layer], seen[layer].to(by_layer[layer].device), atol=1e-5)


def test_each_layer_takes_its_full_residual(stats):
    lm = fresh("llama")
    editor = _editor(lm, stats, FE)
    seen = _recording(editor, lm)
    editor.apply(random_edits(3, seed=2))
    (_, targets), = seen["targets"]
    assert [layer for layer, _, _ in seen["solves"]] == [1, 2, 3]
    for layer, R, h in seen["solves"]:  # h_l on the model the lower layers' writes left
        expected = targets.by_layer[layer] - h.to(targets.by_layer[layer].device)
        assert torch.allclose(R.T, expected, atol=1e-4), layer


def test_spread_is_unchanged(stats):
    requests = random_edits(3, seed=3)
    editor = _editor(fresh("llama"), stats)
    assert editor.variant() is None and editor.target_settings().layer == 2
    editor.apply(requests)
    # the default and an explicit targets: spread give the same edit, bit for bit
    explicit = _editor(fresh("llama"), stats, {"targets": "spread", "replay_targets": "per-batch"})
    explicit.apply(requests)
    assert all(torch.equal(editor.deltas[k], explicit.deltas[k]) for k in editor.deltas)


def test_spread_residual_by_hand(stats):
    lm = fresh("llama")
    requests = random_edits(2, seed=4)
    editor = _editor(lm, stats)
    seen = {"R": []}
    solve = editor.solve

    def record_solve(layer, K, R):
        seen["R"].append((layer, R.detach().clone(), _block_state(lm.model, lm.tokenizer, requests, 2)))
        return solve(layer, K, R)

    compute = editor.compute_targets
    editor.compute_targets = lambda reqs: seen.setdefault("t", compute(reqs))
    editor.solve = record_solve
    editor.apply(requests)
    z = seen["t"].z["block"]
    for i, (layer, R, h_crit) in enumerate(seen["R"]):
        assert torch.allclose(R.T, (z - h_crit.to(z.device)) / (2 - i), atol=1e-4), layer


@pytest.mark.parametrize("method", ["rome", "pmet", "adaedit"])
def test_refused_methods_say_so_in_one_line(method):
    lm = fresh("llama")
    with pytest.raises(HParamsError) as err:
        make_editor(method, lm.model, lm.tokenizer, "tiny", overrides={"targets": "forward-replay"})
    message = str(err.value)
    assert "\n" not in message and method in message and "forward-replay" in message


def test_precomputed_needs_forward_replay():
    lm = fresh("llama")
    with pytest.raises(HParamsError, match="replay_targets: precomputed needs targets: forward-replay"):
        make_editor("memit", lm.model, lm.tokenizer, "tiny", overrides={"replay_targets": "precomputed"})


def test_label_combines_with_defend(stats):
    lm = fresh("llama")
    assert _editor(lm, stats, FE).variant() == "fe"
    assert _editor(lm, stats, {**FE, "replay_targets": "precomputed"}).variant() == "fe-precomputed"
    both = _editor(lm, stats, {**FE, "negation": "defend"})
    assert both.variant() == "defend+fe"
    assert row_label("memit", both.variant()) == "memit+defend+fe"


@pytest.mark.parametrize("timing", ["per-batch", "precomputed"])
def test_save_load_gives_the_same_next_batch(stats, tmp_path, timing):
    settings = {**FE, "replay_targets": timing}
    first, second = random_edits(2, seed=5, prefix="a"), random_edits(2, seed=6, prefix="b")
    lm = fresh("llama")
    editor = _editor(lm, stats, settings)
    editor.apply(first)
    editor.save_state(tmp_path / "state")
    seen = {}
    compute = editor.compute_targets
    editor.compute_targets = lambda reqs: seen.setdefault("continued", compute(reqs))
    editor.apply(second)

    other = fresh("llama")
    resumed = _editor(other, stats, settings)
    resumed.load_state(tmp_path / "state")
    compute_resumed = resumed.compute_targets
    resumed.compute_targets = lambda reqs: seen.setdefault("resumed", compute_resumed(reqs))
    resumed.apply(second)
    for layer in (1, 2, 3):
        assert torch.equal(seen["continued"].by_layer[layer], seen["resumed"].by_layer[layer])
        assert torch.equal(editor.deltas[layer], resumed.deltas[layer])
    if timing == "precomputed":  # the second batch's targets are those of the unedited model
        alone = _editor(fresh("llama"), stats, settings).compute_targets(second)
        for layer in (1, 2, 3):
            assert torch.equal(alone.by_layer[layer], seen["resumed"].by_layer[layer])
    # a state made with another target construction is refused
    spread = _editor(fresh("llama"), stats, {"layers": [1, 2, 3]})
    with pytest.raises(StateError, match="targets: forward-replay"):
        spread.load_state(tmp_path / "state")


def test_cache_never_crosses_constructions(stats, tmp_path):
    one_layer = {"layers": [2]}  # spread and forward replay then optimize the same z
    requests = random_edits(2, seed=7)
    cache = TargetCache(tmp_path / "targets")
    lm = fresh("llama")
    spread = _editor(lm, stats, one_layer, target_cache=cache)
    replay = _editor(lm, stats, {**one_layer, "targets": "forward-replay"}, target_cache=cache)
    spread.compute_targets(requests)
    replay.compute_targets(requests)
    assert (cache.stats.misses, cache.stats.hits) == (2, 0)
    replay.compute_targets(requests)
    spread.compute_targets(requests)
    assert (cache.stats.misses, cache.stats.hits) == (2, 2)
    opt, templates = spread.target_optimizer(), spread.templates().all
    assert cache.key(opt, requests, templates) != cache.key(opt, requests, templates, construction=CACHE_CONSTRUCTION)
