"""The prefix-cached step layout gives the same targets as full rows, with fewer tokens."""

import pytest
import torch

from editprobe.data.records import EditRequest
from editprobe.editing.lte.layout import suffix_groups
from editprobe.editing.lte.targets import Site, TargetOptimizer, TargetSettings
from editprobe.models.tiny import tiny_model

REQUESTS = [
    EditRequest(id="0", subject="Danielle Darrieux", template="The mother tongue of {} is", target="English"),
    EditRequest(id="1", subject="Michael Jordan", template="{} plays", target="piano football"),
    EditRequest(id="2", subject="Toko Yasuda", template="{} was born in", target="Tokyo"),
]
TEMPLATES = ["{}", "The cat is. {}", "Because I. {}"]


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "gptj", "qwen2"])
@pytest.mark.parametrize("sites", [("block",), ("mlp", "attn_out")])
@pytest.mark.parametrize("early_stop", [0.0, 6.6])
@pytest.mark.parametrize("overhead", [0, 10_000])  # one group per suffix length; one group
def test_prefix_cache_matches_full_rows(model_type, sites, early_stop, overhead):
    torch.set_num_threads(1)
    m, tok, adapter = tiny_model(model_type, initializer_range=0.2)
    results = {}
    for cached in (False, True):
        settings = TargetSettings(layer=1, sites=tuple(Site(k, 4.0, 0.5) for k in sites), lr=0.1, steps=6,
                                  prefix_cache=cached, early_stop_loss=early_stop,
                                  group_overhead=overhead)
        results[cached] = TargetOptimizer(m, tok, adapter, settings).run(REQUESTS, TEMPLATES)
    full, cached = results[False], results[True]
    for kind in full.z:
        torch.testing.assert_close(cached.z[kind], full.z[kind], rtol=1e-4, atol=1e-4)
    assert cached.steps == full.steps
    assert cached.loss == pytest.approx(full.loss, rel=1e-4)
    assert cached.forward_tokens < full.forward_tokens / 2


def test_suffix_groups_trade_padding_for_forwards():
    lengths = [1, 1, 6, 2, 6, 5, 1]
    assert suffix_groups(lengths, overhead=0) == [[0, 1, 6], [3], [5], [2, 4]]
    assert suffix_groups(lengths, overhead=1000) == [[0, 1, 2, 3, 4, 5, 6]]
    # three 1-token rows padded to 2 cost 3 slots: less than a separate forward of 4
    assert suffix_groups([1, 1, 1, 2, 6, 6], overhead=4) == [[0, 1, 2, 3], [4, 5]]
    groups = suffix_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))


@pytest.mark.parametrize("templates", [["{}"], ["{}", "The cat is. {}"], ["The cat is. {}", "The cat is. {}"]])
def test_shared_template_prefixes_match_full_rows(templates):
    # one request (its whole prefix is "shared"), only bare templates (nothing shared),
    # two identical templates (two clusters with the same tokens)
    torch.set_num_threads(1)
    m, tok, adapter = tiny_model("llama", initializer_range=0.2)
    for requests in (REQUESTS[:1], REQUESTS):
        results = {}
        for cached in (False, True):
            settings = TargetSettings(layer=1, lr=0.1, steps=4, prefix_cache=cached, early_stop_loss=0.0)
            results[cached] = TargetOptimizer(m, tok, adapter, settings).run(requests, templates)
        torch.testing.assert_close(results[True].z["block"], results[False].z["block"], rtol=1e-4, atol=1e-4)
