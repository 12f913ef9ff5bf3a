"""The relation battery probes (docs/battery.md): subject-bleed (the edited subject under other
relations, baseline-corrected) and knowedit-kinds (KnowEdit's Relation_Specificity and
Subject_Aliasing prompts as their own rows)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from tiny_trained import fresh

from editprobe.data import EditRecord, load_records
from editprobe.forms import QueryForm, trained_metrics
from editprobe.models.tiny import tiny_facts, tiny_model
from editprobe.probes import PROBES, ProbeContext, default_probes
from editprobe.probes.battery import BatteryConfig
from editprobe.probes.builtin.knowedit_kinds import ALIASING, SPECIFICITY, TRUTH, kind_prompts
from editprobe.probes.builtin.subject_bleed import CHANGED_TOKENS, bleed_prompts
from editprobe.probes.exact import exact_match_batch
from editprobe.probes.generation import greedy_decode, query_ids

torch.set_num_threads(1)

BIRTHPLACE, TONGUE = "The birthplace of {}", "The mother tongue of {}"


def _fact(template: str, subject: str) -> str:
    return next(o for t, s, o in tiny_facts(0) if t == template and s == subject)


def _ctx(loaded, records, config=None) -> ProbeContext:
    return ProbeContext(dataset="d", records=records, plan=None, model=loaded.model, tokenizer=loaded.tokenizer,
                        config=config or SimpleNamespace(seed=0, battery=BatteryConfig()))


def _bleed_records() -> list[EditRecord]:
    """Alice's mother tongue edited to her true birthplace; a second record of Alice under
    the birthplace relation makes "The birthplace of Alice" one of the dataset's own facts
    about her, whose answer (on the trained model) is that o*."""
    place = _fact(BIRTHPLACE, "Alice")
    return [EditRecord(id="a", subject="Alice", template=TONGUE, target_new=place, target_true="French"),
            EditRecord(id="b", subject="Alice", template=BIRTHPLACE, target_new="Tokyo", target_true="Sydney"),
            EditRecord(id="c", subject="Bob", template=TONGUE, target_new="Spanish", target_true="German")]


def _expected(before, after, prompts, targets, ids):
    """Per record: the share of its prompts whose o* follows after and did not before."""
    pairs = list(zip(prompts, targets))
    b, a = exact_match_batch(before.model, before.tokenizer, pairs), exact_match_batch(after.model, after.tokenizer,
                                                                                        pairs)
    out: dict[str, list[float]] = {}
    for rid, x, y in zip(ids, b, a):
        out.setdefault(rid, []).append(float(y and not x))
    return {rid: 100.0 * sum(v) / len(v) for rid, v in out.items()}, a, b


@pytest.fixture(scope="module")
def models():
    trained = fresh("llama")
    # The "unedited" model of the first test: same tokenizer, knows none of the facts.
    blank = tiny_model("llama", seed=1, tokenizer=trained.tokenizer)
    return trained, blank


def test_subject_bleed_counts_o_star_after_other_relations_by_hand(models):
    trained, blank = models
    records = _bleed_records()
    probe = PROBES["subject-bleed"]
    base = probe.measure(_ctx(blank, records), "baseline", None)
    after = probe.measure(_ctx(trained, records), "positive", base)
    # Record a: three generic templates (none of the mother-tongue relation) + the birthplace fact.
    prompts_a = [p for rid, p in zip(base["record_ids"], base["prompts"]) if rid == "a"]
    assert "The birthplace of Alice" in prompts_a and len(prompts_a) == 4
    assert not any("language" in p for p in prompts_a)
    assert bleed_prompts(records[0], records, 0) == bleed_prompts(records[0], records[::-1], 0)  # order-free
    expected, hits_after, hits_before = _expected(blank, trained, base["prompts"], base["targets"], base["record_ids"])
    assert hits_after[base["prompts"].index("The birthplace of Alice")]  # the bleed the test is about is there
    outcome, rows = probe.combine(_ctx(trained, records), {"baseline": base, "positive": after}, {})
    assert outcome.metrics["bleed"].records == pytest.approx(expected)
    assert outcome.metrics["bleed"].value == pytest.approx(round(sum(expected.values()) / len(expected), 1))
    assert expected["a"] >= 25.0 and outcome.metrics["bleed"].higher_is_better is False
    # changed: the first greedy tokens differ between the two models
    ids = [query_ids(trained.tokenizer, p) for p in base["prompts"]]
    greedy = {name: greedy_decode(m.model, m.tokenizer, ids, CHANGED_TOKENS) for name, m in
              (("before", blank), ("after", trained))}
    changed: dict[str, list[float]] = {}
    for rid, x, y in zip(base["record_ids"], greedy["before"], greedy["after"]):
        changed.setdefault(rid, []).append(float(x != y))
    assert outcome.metrics["changed"].records == pytest.approx({k: 100 * sum(v) / len(v) for k, v in changed.items()})
    assert outcome.table == "battery" and outcome.details["flag"] is None
    assert {r["setting"] for r in rows} >= {"subject-bleed/template", "subject-bleed/record"}
    assert all(r["expected"] == next(x.target_new for x in records if x.id == r["record_id"]) for r in rows)


def test_subject_bleed_is_baseline_corrected(models):
    trained, _ = models
    records = _bleed_records()
    probe = PROBES["subject-bleed"]
    ctx = _ctx(trained, records)
    base = probe.measure(ctx, "baseline", None)
    after = probe.measure(ctx, "positive", base)  # the same model: nothing can bleed
    at = base["prompts"].index("The birthplace of Alice")
    assert base["hits"][at] and after["hits"][at]  # o* already followed before the "edit"
    outcome, _ = probe.combine(ctx, {"baseline": base, "positive": after}, {})
    assert outcome.metrics["bleed"].value == 0.0 and outcome.metrics["changed"].value == 0.0
    no_edit, rows = probe.no_edit(ctx, base)
    n_a = base["record_ids"].count("a")
    assert no_edit.metrics["bleed"].records["a"] == pytest.approx(100.0 * sum(
        h for rid, h in zip(base["record_ids"], base["hits"]) if rid == "a") / n_a)
    assert no_edit.metrics["bleed"].records["a"] > 0 and no_edit.details["flag"] is None
    assert all(r["edited_with"] == "none" for r in rows)


def test_known_only_keeps_the_facts_the_unedited_model_knows(models):
    trained, _ = models
    records = [EditRecord(id="k", subject="Alice", template=TONGUE, target_new="Paris",
                          target_true=_fact(TONGUE, "Alice")),
               EditRecord(id="u", subject="Bob", template=TONGUE, target_new="Paris", target_true="Toronto")]
    cfg = SimpleNamespace(seed=0, battery=BatteryConfig(known_only=True))
    base = PROBES["subject-bleed"].measure(_ctx(trained, records, cfg), "baseline", None)
    assert base["known"] == ["k"] and set(base["record_ids"]) == {"k"}


def _knowedit(shared_data, n=4):
    return load_records(shared_data / "wiki_counterfact/test_cf.json").records[:n]


def test_knowedit_kinds_are_read_and_the_pools_are_unchanged(shared_data):
    records = _knowedit(shared_data)
    raw = json.loads((shared_data / "wiki_counterfact/test_cf.json").read_text())[:len(records)]
    for r, entry in zip(records, raw):
        for group, kind in (("locality", SPECIFICITY), ("portability", ALIASING)):
            assert len(kind_prompts(r, kind)) == len(entry.get(group, {}).get(kind, []))
        # The kinds only label the pools: every locality / portability prompt is still there.
        assert len(r.neighborhood) == sum(len(v) for v in entry.get("locality", {}).values())
        assert len(r.portability) == sum(len(v) for v in entry.get("portability", {}).values())
        assert all(a == r.target_new for _, a in kind_prompts(r, ALIASING))


def test_knowedit_kinds_match_the_pooled_probes_on_their_prompts(shared_data, tiny):
    """Each kind under its pool's protocol: the neighborhood (EasyEdit locality) and portability
    probes run on records holding only that kind give the same per-record values."""
    records = _knowedit(shared_data)
    before = tiny("llama", seed=0)
    after = tiny("llama", seed=2, tokenizer=before.tokenizer)
    probe = PROBES["knowedit-kinds"]
    base = probe.measure(_ctx(before, records), "baseline", None)
    edited = probe.measure(_ctx(after, records), "positive", base)
    outcome, rows = probe.combine(_ctx(after, records), {"baseline": base, "positive": edited}, {})
    only = {SPECIFICITY: [r.model_copy(update={"neighborhood": tuple(p for p in r.neighborhood
                                                                     if p.kind == SPECIFICITY)}) for r in records],
            ALIASING: [r.model_copy(update={"portability": tuple(p for p in r.portability if p.kind == ALIASING)})
                       for r in records]}
    for kind, pooled_probe, metric in ((SPECIFICITY, "neighborhood", "tokens"), (ALIASING, "portability", "tokens")):
        pooled = PROBES[pooled_probe]
        pb = pooled.measure(_ctx(before, only[kind]), "baseline", None)
        pa = pooled.measure(_ctx(after, only[kind]), "positive", pb)
        reference, _ = pooled.combine(_ctx(after, only[kind]), {"baseline": pb, "positive": pa}, {})
        assert outcome.metrics[kind].records == pytest.approx(reference.metrics[metric].records), kind
    assert set(outcome.metrics) == {SPECIFICITY, TRUTH, ALIASING} and outcome.table == "battery"
    no_edit, _ = probe.no_edit(_ctx(before, records), base)
    assert set(no_edit.metrics) == {TRUTH, ALIASING}  # agreement with itself is not shown
    assert no_edit.details["flag"]  # a random model knows none of these facts: at its floor
    assert {r["setting"] for r in rows} == {f"knowedit-kinds/{k}" for k in (SPECIFICITY, TRUTH, ALIASING)}


def test_metric_forms_mark_trained_cells():
    assert trained_metrics(PROBES["knowedit-kinds"].metric_forms, frozenset({QueryForm.PARAPHRASE})) == [ALIASING]
    assert trained_metrics(PROBES["subject-bleed"].metric_forms, frozenset({QueryForm.NEGATED})) == []


FORMATS = {
    "wiki_counterfact/test_cf.json": {"subject-bleed", "knowedit-kinds"},
    "zsre/ZsRE-test-all.json": {"subject-bleed", "knowedit-kinds"},
    "mquake/MQuAKE-hard.json": {"subject-bleed"},
    "counterfact/counterfact_filtered.json": {"subject-bleed"},
    "zsre/zsre_mend_edit.json": {"subject-bleed"},
}
SKIP_REASON = "no Relation_Specificity or Subject_Aliasing prompts in the records (KnowEdit files only)"


@pytest.mark.parametrize("path", list(FORMATS))
def test_default_set_on_every_standard_format(shared_data, tiny, path):
    records = load_records(shared_data / path).records[:4]
    before = tiny("llama", seed=0)
    after = tiny("llama", seed=3, tokenizer=before.tokenizer)
    assert "knowedit-kinds" in default_probes() and "subject-bleed" not in default_probes()  # opt-in: its cost
    for name in ("subject-bleed", "knowedit-kinds"):
        probe = PROBES[name]
        applies = probe.applies_to(_ctx(before, records))
        assert applies == (name in FORMATS[path]), (name, SKIP_REASON)
        if not applies:
            continue
        base = probe.measure(_ctx(before, records), "baseline", None)
        state = probe.measure(_ctx(after, records), "positive", base)
        outcome, rows = probe.combine(_ctx(after, records), {"baseline": base, "positive": state}, {})
        no_edit, _ = probe.no_edit(_ctx(before, records), base)
        json.dumps([base, state])  # stage files are JSON
        assert rows and outcome.metrics and no_edit is not None and no_edit.metrics
        for metric in [*outcome.metrics.values(), *no_edit.metrics.values()]:
            assert metric.label and metric.records and metric.higher_is_better is not None
