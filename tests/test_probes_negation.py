"""Negated queries (docs/protocol.md#negated-queries): the plan (requests, exclusions), per-record scoring of an edited
model in the four settings, the score arithmetic, and the no-edit baseline."""

from __future__ import annotations

import pytest
import torch

from editprobe.data import EditRecord, load_records
from editprobe.data.negation import Negation
from editprobe.models.tiny import tiny_facts, tiny_model
from editprobe.probes import (
    NegationRun,
    Score,
    build_negation_plan,
    conditional_leakage,
    negation_scores,
    no_edit_baseline,
    score_negation_run,
)
from editprobe.probes.baseline import QUESTION_REASON
from editprobe.probes.exact import exact_match_batch
from editprobe.probes.registry import NEGATION_SETTINGS
from editprobe.probes.results import ProbeSample

torch.set_num_threads(1)


def _rec(i: int, template: str, subject: str = "Alice", new: str = "French", true: str | None = "German",
         **kw) -> EditRecord:
    return EditRecord(id=str(i), subject=subject, template=template, target_new=new, target_true=true, **kw)


def _tiny_negate(template: str, relation_id: str | None) -> str | None:
    """The tiny facts' templates have no verb ("The birthplace of {}"); this user function
    negates two of the four relations and declines the others."""
    return {"The mother tongue of {}": "Not the mother tongue of {}",
            "The birthplace of {}": "Never the birthplace of {}"}.get(template)


# --- the plan -----------------------------------------------------------------------------


def test_plan_builds_positive_and_negative_requests_and_reports_exclusions():
    records = [
        _rec(0, "The mother tongue of {} is", relation_id="P103"),
        _rec(1, "{} plays", new="hockey", relation_id="P641"),
        _rec(2, "The sport played by {}"),  # no verb: no rule can negate it
        _rec(3, "{} was born in", new="Paris"),
    ]
    plan = build_negation_plan(records)
    assert plan.record_ids == ("0", "1", "3")
    assert plan.n_excluded == 1 and plan.excluded[0].record_id == "2"
    assert plan.excluded[0].rule == "unnegatable" and plan.excluded[0].reason
    pos, neg = plan.positive_requests(), plan.negative_requests()
    assert [r.template for r in pos] == ["The mother tongue of {} is", "{} plays", "{} was born in"]
    assert [r.template for r in neg] == ["The mother tongue of {} is not", "{} does not play", "{} was not born in"]
    # Same subject and the same target o* in both requests: only the template differs.
    assert all(p.subject == n.subject and p.target == n.target == r.target_new and p.id == n.id
               for p, n, r in zip(pos, neg, [records[0], records[1], records[3]]))
    assert plan.items[0].negation.rule == "relation-table:P103"
    assert "3/4 records kept, 1 excluded" in plan.summary()


def test_plan_accepts_user_functions_and_rejects_bad_negations():
    records = [_rec(0, "The birthplace of {}"), _rec(1, "The mother tongue of {}"), _rec(2, "Sport of {}"),
               _rec(3, "X of {}"), _rec(4, "Y of {}")]

    def fn(template: str, relation_id: str | None) -> Negation | str | None:
        if template == "X of {}":
            return "X of nobody"  # lost the placeholder
        if template == "Y of {}":
            return Negation(template=template, negated="Y  of {}", rule="mine", ok=True)  # unchanged
        return _tiny_negate(template, relation_id)

    plan = build_negation_plan(records, fn)
    assert plan.record_ids == ("0", "1")
    assert plan.items[0].negation.rule == "custom-function"
    reasons = {e.record_id: e.reason for e in plan.excluded}
    assert set(reasons) == {"2", "3", "4"}
    assert "returned None" in reasons["2"] and "exactly one" in reasons["3"] and "equals" in reasons["4"]


# --- the score arithmetic -----------------------------------------------------------------


def _run(plan, edited_with: str, hits: dict[str, int]) -> NegationRun:
    ids = plan.record_ids
    samples = [ProbeSample(record_id=rid, setting=s, probe=NEGATION_SETTINGS[s].name, query="q", expected="o",
                           match=i < h) for s, h in hits.items() for i, rid in enumerate(ids)]
    scores = {s: Score.of(NEGATION_SETTINGS[s], (x.match for x in samples if x.setting == s)) for s in hits}
    return NegationRun(edited_with=edited_with, record_ids=ids, scores=scores, samples=tuple(samples))


def test_scores_and_discrepancies_follow_the_paper_definitions():
    plan = build_negation_plan([_rec(i, "{} was born in", subject=f"S{i}") for i in range(7)])
    scores = negation_scores(plan, _run(plan, "positive", {"PP": 7, "PN": 2}), _run(plan, "negative", {"NN": 6, "NP": 3}))
    # 7/7, 2/7, 6/7, 3/7 -> 100.0, 28.6, 85.7, 42.9 (one decimal)
    assert scores.row()["PP"] == 100.0 and scores.PN == 28.6 and scores.NN == 85.7 and scores.NP == 42.9
    # Discrepancies from the exact fractions: PP-PN = 500/7 = 71.43, PP-NP = 57.14,
    # NN-PN = 57.14, NN-NP = 42.86; Avg = mean = 57.14.
    assert scores.discrepancies == {"PP-PN": 71.4, "PP-NP": 57.1, "NN-PN": 57.1, "NN-NP": 42.9}
    assert scores.avg == 57.1
    dumped = scores.model_dump()
    assert dumped["PP"] == 100.0 and dumped["avg"] == 57.1 and len(dumped["samples"]) == 28


def test_a_missing_run_leaves_its_settings_empty_and_avg_is_the_mean_of_what_exists():
    plan = build_negation_plan([_rec(i, "{} was born in", subject=f"S{i}") for i in range(4)])
    only_pos = negation_scores(plan, _run(plan, "positive", {"PP": 3, "PN": 1}), None)
    assert (only_pos.PP, only_pos.PN, only_pos.NN, only_pos.NP) == (75.0, 25.0, None, None)
    assert only_pos.discrepancies["PP-PN"] == 50.0 and only_pos.discrepancies["NN-NP"] is None
    assert only_pos.avg == 50.0  # the paper's Avg, as every table prints it: PP-PN alone here
    with pytest.raises(ValueError, match="edited with"):
        negation_scores(plan, _run(plan, "negative", {"NN": 1, "NP": 1}), None)
    other = build_negation_plan([_rec(9, "{} was born in")])
    with pytest.raises(ValueError, match="other records"):
        negation_scores(other, _run(plan, "positive", {"PP": 1, "PN": 1}), None)
    with pytest.raises(ValueError, match="no run"):
        negation_scores(plan, None, None)


def _run_of(plan, edited_with: str, matches: dict[str, list[bool]]) -> NegationRun:
    """A run with the given per-record verdicts of each setting."""
    ids = plan.record_ids
    samples = [ProbeSample(record_id=rid, setting=s, probe=NEGATION_SETTINGS[s].name, query="q", expected="o",
                           match=m) for s, flags in matches.items() for rid, m in zip(ids, flags)]
    scores = {s: Score.of(NEGATION_SETTINGS[s], flags) for s, flags in matches.items()}
    return NegationRun(edited_with=edited_with, record_ids=ids, scores=scores, samples=tuple(samples))


def test_leakage_among_successful_edits_is_counted_per_record():
    plan = build_negation_plan([_rec(i, "{} was born in", subject=f"S{i}") for i in range(5)])
    positive = _run_of(plan, "positive", {"PP": [True, True, True, False, False], "PN": [True, False, False, True, True]})
    negative = _run_of(plan, "negative", {"NN": [False] * 5, "NP": [True, False, False, False, False]})
    got = conditional_leakage([positive, negative])
    # PN hit on 3 of 5 records (60%), but on 1 of the 3 whose PP hit: PN|PP = 33.3 over n = 3.
    assert (got["PN|PP"].hits, got["PN|PP"].n, got["PN|PP"].value) == (1, 3, 33.3)
    # No NN hit: NP|NN has n = 0 and no value (never 0).
    assert got["NP|NN"].n == 0 and got["NP|NN"].value is None
    assert set(conditional_leakage([positive])) == {"PN|PP"}  # RLEdit: the positive run only


# --- scoring a model ----------------------------------------------------------------------


def _known_records(n: int = 16) -> list[EditRecord]:
    """Tiny facts as records whose *new* target is what the trained model knows: the
    trained model then plays an edited model whose edits succeeded."""
    return [EditRecord(id=f"f{i}", subject=s, template=t, target_new=o, target_true="Sydney")
            for i, (t, s, o) in enumerate(tiny_facts(0)[:n])]


@pytest.mark.parametrize("edited_with", ["positive", "negative"])
def test_run_scores_every_kept_record_with_both_queries(trained_llama, edited_with):
    model, tok = trained_llama.model, trained_llama.tokenizer
    plan = build_negation_plan(_known_records(), _tiny_negate)
    assert plan.n_records == 8 and plan.n_excluded == 8  # two of the four relations negate
    run = score_negation_run(model, tok, plan, edited_with)
    pos = exact_match_batch(model, tok, [(i.query("positive"), i.record.target_new) for i in plan.items])
    neg = exact_match_batch(model, tok, [(i.query("negated"), i.record.target_new) for i in plan.items])
    on_pos, on_neg = ("PP", "PN") if edited_with == "positive" else ("NP", "NN")
    assert set(run.scores) == {on_pos, on_neg}
    assert run.scores[on_pos].hits == sum(pos) >= 7 and run.scores[on_pos].n == 8
    assert run.scores[on_neg].hits == sum(neg)
    assert len(run.samples) == 16
    for s in run.samples:
        item = next(i for i in plan.items if i.record.id == s.record_id)
        assert s.query == item.query("positive" if s.setting == on_pos else "negated")
        assert s.expected == item.record.target_new and s.probe == f"negation/{s.setting}"
        assert s.generated is not None and s.decode_match == s.match
        if s.match:
            assert s.generated.strip().startswith(s.expected)


# --- the no-edit baseline -----------------------------------------------------------------


def test_no_edit_baseline_keeps_only_known_records(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    facts = [f for f in tiny_facts(0)[:16] if _tiny_negate(f[0], None)]
    # Half the records carry the true old object, half a wrong one the model does not say.
    records = [EditRecord(id=f"r{i}", subject=s, template=t, target_new="Sydney",
                          target_true=o if i % 2 == 0 else "hockey") for i, (t, s, o) in enumerate(facts)]
    records.append(EditRecord(id="q", subject="Alice", template="What is the native language of {}?",
                              target_new="German", target_true="French", is_question=True))
    plan = build_negation_plan(records, lambda t, r: _tiny_negate(t, r) or ("What is not the native language of {}?"
                                                                            if t.startswith("What") else None))
    base = no_edit_baseline(model, tok, plan)
    known = exact_match_batch(model, tok, [(r.query, r.target_true) for r in records[:-1]])
    kept = [r for r, k in zip(records[:-1], known) if k]
    assert 0 < len(kept) <= len(facts) // 2  # the wrong old objects are never kept
    assert base.available and base.known.hits == len(kept) and base.known.n == len(facts)
    assert base.PP == 100.0 and base.pp.n == len(kept)
    negated = exact_match_batch(model, tok, [(_tiny_negate(r.template, None).format(r.subject), r.target_true)
                                             for r in kept])
    assert base.pn.hits == sum(negated) and base.pn.n == len(kept)
    assert base.skipped == {QUESTION_REASON: 1}
    assert {s.setting for s in base.samples} == {"no-edit-P", "no-edit-N"}


def test_no_edit_baseline_is_absent_for_question_datasets():
    lm = tiny_model("llama")  # never queried: no record qualifies
    records = [_rec(i, "Which family does {} belong to?", subject=f"S{i}", is_question=True) for i in range(3)]
    records.append(_rec(9, "{} was born in", true=None))
    base = no_edit_baseline(lm.model, lm.tokenizer, build_negation_plan(records))
    assert not base.available and base.PP is None and base.PN is None
    assert "zsRE" in base.note and base.skipped[QUESTION_REASON] == 3 and sum(base.skipped.values()) == 4
    assert base.known.n == 0 and base.samples == ()


# --- SmolLM2 ------------------------------------------------------------------------------


@pytest.mark.integration
def test_no_edit_baseline_on_smollm2(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    records = load_records("counterfact-sample", limit=30).records
    plan = build_negation_plan(records)
    assert plan.n_records == 30  # the curated relation table covers the built-in sample
    base = no_edit_baseline(model, tok, plan)
    known = exact_match_batch(model, tok, [(r.query, r.target_true) for r in records])
    assert base.known.hits == sum(known) > 0 and base.PP == 100.0
    kept = {s.record_id for s in base.samples if s.setting == "no-edit-N"}
    assert kept == {r.id for r, k in zip(records, known) if k}
    assert all(s.decode_match == s.match for s in base.samples)  # fast path == generate() decode
    assert 0.0 <= base.PN <= 100.0
