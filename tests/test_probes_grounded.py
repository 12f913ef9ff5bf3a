"""Grounded efficacy (probes/builtin/grounded.py): the per-record conjunction of the battery's
parts, hand-computed on constructed outcomes (stand-ins for the battery probes, which live in
their own files), its no-edit row, its forms and its place in the run's probe order."""

from __future__ import annotations

from types import SimpleNamespace

from editprobe.forms import QueryForm
from editprobe.probes import PROBES
from editprobe.probes.base import Metric, ProbeContext, ProbeOutcome
from editprobe.probes.battery import BATTERY_TABLE, GROUNDED_PARTS
from editprobe.probes.builtin.grounded import PART_FORMS, GroundedProbe
from editprobe.runs.plan import order_probes


def outcome(probe: str, table: str = BATTERY_TABLE, **metrics: dict[str, float]) -> ProbeOutcome:
    """A stand-in outcome whose metrics hold the given per-record values (0..100)."""
    return ProbeOutcome(probe=probe, version=1, table=table, metrics={
        key: Metric.of_records({rid: v / 100 for rid, v in values.items()}, f"{probe} {key}")
        for key, values in metrics.items()})


def ctx(probes=("negation", "paraphrase", "heldout-negation", "grounded"), no_edit=None) -> ProbeContext:
    return ProbeContext(dataset="d", records=[], plan=None, model=None, tokenizer=None,
                        config=SimpleNamespace(probes=probes), no_edit=no_edit or {})


# r1 grounded on all three parts; r2: the negated paraphrase leaks; r3: paraphrase half right;
# r4 has no NPara (left out for it) and holds on the rest; r5 has only PP.
OTHERS = {
    "negation": outcome("negation", "negation", PP={"r1": 100, "r2": 100, "r3": 100, "r4": 100, "r5": 0}),
    "paraphrase": outcome("paraphrase", "classic", EM={"r1": 100, "r2": 100, "r3": 50, "r4": 100}),
    "heldout-negation": outcome("heldout-negation", NPara={"r1": 0, "r2": 100, "r3": 0}),
}


def test_the_conjunction_by_hand_over_the_parts_each_record_has():
    probe = GroundedProbe()
    out, rows = probe.combine(ctx(), {"baseline": {}, "positive": {}}, OTHERS)
    metric = out.metrics["grounded"]
    assert metric.records == {"r1": 100.0, "r2": 0.0, "r3": 0.0, "r4": 100.0, "r5": 0.0}
    assert (metric.value, metric.n, metric.higher_is_better) == (40.0, 5, True)
    assert metric.lo is not None and "conjunction" in metric.label
    assert out.table == BATTERY_TABLE and out.details["flag"] is None  # no no-edit row to judge it by
    assert out.details["parts"] == {"negation PP": 5, "paraphrase EM": 4, "heldout-negation NPara": 3}
    assert out.details["every_record"] == ["negation PP"]
    assert out.details["some_records"] == ["paraphrase EM", "heldout-negation NPara"]
    assert out.details["absent"] == ["question-forms question", "two-choice both"]
    r4 = next(r for r in rows if r["record_id"] == "r4")
    assert r4["match"] is True and r4["query"] == "negation PP ∧ paraphrase EM" and r4["setting"] == "grounded"
    assert {"edited_with", "record_id", "setting", "probe", "query", "expected", "generated", "match"} <= set(r4)


def test_no_parts_ran_gives_an_empty_row_with_the_reason():
    out, rows = GroundedProbe().combine(ctx(), {}, {"efficacy": outcome("efficacy", "classic", EM={"r1": 100})})
    assert out.metrics["grounded"].value is None and rows == []
    assert "none of its parts ran" in out.details["skipped"]
    assert not GroundedProbe().applies_to(ctx(probes=("efficacy", "perplexity")))
    assert GroundedProbe().applies_to(ctx(probes=("negation",)))


def test_no_edit_row_on_the_true_fact_over_the_known_records():
    # the negation no-edit PP keeps only the records the unedited model knows (r1, r2); the
    # classic paraphrase EM asks o* on the unedited model: left out of the no-edit conjunction
    no_edit = {"negation": outcome("negation", "negation", PP={"r1": 100, "r2": 100}),
               "paraphrase": outcome("paraphrase", "classic", EM={"r1": 0, "r2": 0, "r3": 0}),
               "heldout-negation": outcome("heldout-negation", NPara={"r1": 0, "r2": 100, "r3": 0})}
    probe = GroundedProbe()
    out, rows = probe.no_edit(ctx(no_edit=no_edit), {})
    assert out.metrics["grounded"].records == {"r1": 100.0, "r2": 0.0}
    assert out.details["parts"] == {"negation PP": 2, "heldout-negation NPara": 2}
    assert out.details["left_out"] == ["paraphrase EM"] and out.details["flag"] is None
    assert [r["edited_with"] for r in rows] == ["none", "none"]
    # the method row carries the flag of its no-edit row: here at the floor
    floor = probe.outcome({"grounded": Metric(value=0.0, n=2, label="x")})
    method, _ = probe.combine(ctx(no_edit={"grounded": floor}), {}, OTHERS)
    assert method.details["flag"].startswith("at its floor")
    assert probe.no_edit(ctx(), {}) == (None, [])  # nothing measured the true fact: no row


def test_forms_are_the_parts_forms_and_it_runs_after_its_parts():
    assert set(PART_FORMS) == set(GROUNDED_PARTS)
    for (name, metric), form in PART_FORMS.items():
        if name in PROBES:  # the parts' probes that are registered in this build
            assert form in PROBES[name].metric_forms[metric], (name, metric)
    assert GroundedProbe.metric_forms["grounded"] == frozenset(PART_FORMS.values())
    assert QueryForm.NEGATED not in GroundedProbe.metric_forms["grounded"]  # defend trains no part of it
    names = [p.name for p in order_probes([PROBES["grounded"], PROBES["negation"], PROBES["paraphrase"]])]
    assert names == ["negation", "paraphrase", "grounded"]
    assert "grounded" in {name for name, p in PROBES.items() if p.default}


def test_a_part_flagged_on_this_model_is_left_out_and_named():
    from editprobe.probes.builtin.grounded import GroundedProbe

    flag = "at its floor: the unedited model scores 0.0 on the true fact"
    two_choice = outcome("two-choice", both={"r1": 0, "r2": 0})
    flagged = two_choice.model_copy(update={"details": {"flag": flag}})
    others = {"negation": outcome("negation", PP={"r1": 100, "r2": 100}), "two-choice": flagged}
    c = ctx(probes=("negation", "two-choice", "grounded"), no_edit={"two-choice": flagged})
    out, _ = GroundedProbe().combine(c, {}, others)
    assert out.metrics["grounded"].value == 100.0 and out.details["flagged_out"] == ["two-choice both"]
    # Not flagged: the part decides.
    c = ctx(probes=("negation", "two-choice", "grounded"), no_edit={"two-choice": two_choice})
    out, _ = GroundedProbe().combine(c, {}, {**others, "two-choice": two_choice})
    assert out.metrics["grounded"].value == 0.0 and out.details["flagged_out"] == []
