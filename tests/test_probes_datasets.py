"""Every built-in probe on every standard dataset format, in a run on a tiny model: the
probes that apply run and report their dataset's protocol, the others stay out."""

from __future__ import annotations

import pytest

from editprobe.runs import RunConfig, run_experiment
from editprobe.runs.summary import parse_summary

DATASETS = {
    "zsre/zsre_mend_edit.json": ("zsre_mend_edit", {"negation", "factcheck", "efficacy", "paraphrase",
                                                     "neighborhood", "portability", "perplexity"},
                                    "tokens"),
    "zsre/ZsRE-test-all.json": ("ZsRE-test-all", {"negation", "factcheck", "efficacy", "paraphrase", "neighborhood",
                                                   "portability", "perplexity",
                                                   "knowedit-kinds"}, "tokens"),
    "wiki_counterfact/test_cf.json": ("test_cf", {"negation", "factcheck", "efficacy", "paraphrase", "neighborhood",
                                                  "portability", "perplexity",
                                                  "knowedit-kinds"}, "tokens"),
    "mquake/MQuAKE-hard.json": ("MQuAKE-hard", {"negation", "factcheck", "efficacy", "multihop", "perplexity"}, "prob"),
    "counterfact/counterfact_filtered.json": ("counterfact_filtered", {"negation", "factcheck", "efficacy",
                                                                       "paraphrase", "neighborhood", "perplexity"}, "prob"),
}
# #27's battery probes in the default set (each on every format: tests/test_probes_battery_*.py)
BATTERY = {"question-forms", "two-choice", "grounded"}


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


@pytest.mark.parametrize("path", list(DATASETS))
def test_default_probes_on_a_standard_dataset(ws, shared_data, path):
    key, expected, protocol = DATASETS[path]
    expected = expected | BATTERY
    cfg = RunConfig.build({"model": str(ws["model"]), "methods": ["memit"], "datasets": [str(shared_data / path)],
                           "n": 2, "batch_size": 4, "out": ws["root"] / key, "hparams": "tiny",
                           "overrides": {"mom2_corpus": str(ws["corpus"])}})
    summary = parse_summary(run_experiment(cfg, progress=False))
    data = summary.datasets[key]
    ran = set(data.probes)
    # Which probes apply depends on the records: each one that ran reported a row.
    assert ran <= expected | BATTERY and {"negation", "efficacy", "perplexity"} <= ran, ran
    (result,) = summary.results
    assert set(result.probes) == ran
    assert set(result.probes["efficacy"].metrics) == ({"prob", "magnitude", "EM"} if protocol == "prob" else {"tokens"})
    if key.startswith("zsre") or key.startswith("ZsRE"):
        assert "factcheck" not in data.no_edit  # no old object (docs/protocol.md#no-edit-baseline): no No-edit row
    for outcome in result.probes.values():
        for metric in outcome.metrics.values():
            assert metric.label and (metric.value is None or metric.value == metric.value)  # labelled, never NaN
