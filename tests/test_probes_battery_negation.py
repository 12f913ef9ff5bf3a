"""The held-out negation and prefix distraction probes (docs/battery.md): each metric against a
hand count of exact matches (probes/exact.py directly) on the trained tiny model, and both probes
in a tiny run on every standard dataset format (measured, or skipped with the reason)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from test_paper_files import paper_records
from test_runs_helpers import NEGATIONS, config

from editprobe.data import EditRecord
from editprobe.data.records import PromptAnswer
from editprobe.forms import QueryForm, trained_metrics
from editprobe.models.tiny import tiny_facts
from editprobe.probes import PROBES, ProbeContext, default_probes
from editprobe.probes.battery import BatteryConfig
from editprobe.probes.builtin.distraction import OTHER_RELATIONS
from editprobe.probes.builtin.heldout_negation import SKIP_NO_PARAPHRASE, SKIP_QUESTION_ALT, plan_queries
from editprobe.probes.exact import exact_match_batch
from editprobe.runs import run_experiment
from editprobe.runs.summary import parse_summary

FACTS = [f for f in tiny_facts(0) if f[0] in NEGATIONS][:4]


def _records() -> list[EditRecord]:
    """Two records edit toward the object the model knows (so negated queries can hit o*), two
    toward another; each has a negatable paraphrase behind a prefix sentence, record 0 an
    unnegatable one too, record 3 none."""
    out = []
    for i, (template, subject, true) in enumerate(FACTS):
        others = sorted({o for t, _, o in tiny_facts(0) if t == template} - {true})
        new = true if i < 2 else others[0]
        paraphrases = (f"A note. {template.format(subject)}",) if i < 3 else ()
        if i == 0:
            paraphrases += (f"{subject}, native",)  # no verb, no table entry: unnegatable
        neighbour = FACTS[(i + 1) % len(FACTS)]
        out.append(EditRecord(id=str(i), subject=subject, template=template, target_new=new, target_true=true,
                              paraphrase_prompts=paraphrases, source_format="counterfact",
                              neighborhood=(PromptAnswer(prompt=neighbour[0].format(neighbour[1]),
                                                         answers=(neighbour[2],)),)))
    return out


def _negated(template: str, subject: str) -> str:
    return NEGATIONS[template].format(subject)


@pytest.fixture
def ctx(trained_llama, tmp_path):
    table = tmp_path / "neg.yaml"
    table.write_text("".join(f'"{k}": "{v}"\n' for k, v in NEGATIONS.items()))
    cfg = SimpleNamespace(negation_table=str(table), seed=3, battery=BatteryConfig())
    return ProbeContext(dataset="d", records=_records(), plan=None, model=trained_llama.model,
                        tokenizer=trained_llama.tokenizer, config=cfg)


def _em(ctx, pairs) -> list[bool]:
    return exact_match_batch(ctx.model, ctx.tokenizer, pairs)


def _mean_pct(values: list[float]) -> float:
    return round(100 * sum(values) / len(values), 1)


def test_heldout_negation_equals_a_hand_count(ctx):
    probe = PROBES["heldout-negation"]
    base = probe.measure(ctx, "baseline", None)
    after = probe.measure(ctx, "positive", base)
    outcome, rows = probe.combine(ctx, {"baseline": base, "positive": after}, {})
    records = ctx.records
    # NPara: one negatable paraphrase per record 0..2 ("A note. " kept, its sentence negated by the table)
    npara = [_em(ctx, [(f"A note. {_negated(r.template, r.subject)}", r.target_new)])[0] for r in records[:3]]
    assert outcome.metrics["NPara"].value == _mean_pct([float(h) for h in npara])
    assert outcome.metrics["NPara"].n == 3 and outcome.metrics["NPara"].higher_is_better is False
    alt = []
    for r in records:
        lowered = r.template.format(r.subject)
        alt.append(_em(ctx, [(f"It is not true that {lowered[0].lower()}{lowered[1:]}", r.target_new)])[0])
    assert outcome.metrics["NAlt"].value == _mean_pct([float(h) for h in alt])
    assert outcome.metrics["NAlt"].records == {r.id: 100.0 * h for r, h in zip(records, alt)}
    assert outcome.table == "battery" and "exact match" in outcome.metrics["NPara"].label
    assert outcome.details["skipped"] == {"unnegatable: no finite verb or participle found": 1,
                                          SKIP_NO_PARAPHRASE: 1}
    assert {row["setting"] for row in rows} == {"NPara", "NAlt"} and all("generated" in row for row in rows)
    assert probe.metric_forms["NPara"] == frozenset({QueryForm.NEGATED_PARAPHRASE}) == probe.metric_forms["NAlt"]


def test_heldout_negation_no_edit_row_is_conditioned_on_the_plain_form(ctx):
    probe = PROBES["heldout-negation"]
    base = probe.measure(ctx, "baseline", None)
    outcome, rows = probe.no_edit(ctx, base)
    expected = {}
    for r in ctx.records[:3]:
        if _em(ctx, [(f"A note. {r.query}", r.target_true)])[0]:
            expected[r.id] = 100.0 * _em(ctx, [(f"A note. {_negated(r.template, r.subject)}", r.target_true)])[0]
    assert outcome.metrics["NPara"].records == expected
    known = [_em(ctx, [(r.query, r.target_true)])[0] for r in ctx.records]
    assert outcome.details["known"] == _mean_pct([float(k) for k in known])
    assert "flag" in outcome.details and rows and all(row["edited_with"] == "none" for row in rows)


def test_distraction_equals_a_hand_count(ctx):
    probe = PROBES["distraction"]
    base = probe.measure(ctx, "baseline", None)
    after = probe.measure(ctx, "positive", base)
    outcome, rows = probe.combine(ctx, {"baseline": base, "positive": after}, {})
    hits, asked = {}, {}
    for r in ctx.records:
        prefix = f"{r.query} {r.target_new}."
        subject_rows = [row for row in rows if row["record_id"] == r.id and row["setting"] == "subject"]
        (chosen,) = subject_rows
        # the other relation is one of the curated prompts, not the record's own, chosen by seed
        relation = chosen["query"][len(prefix) + 1:]
        assert relation in {t.format(r.subject) for t in OTHER_RELATIONS if t != r.template}
        queries = [f"{prefix} {relation}", f"{prefix} {r.neighborhood[0].prompt}"]
        asked[r.id] = queries
        hits[r.id] = sum(_em(ctx, [(q, r.target_new) for q in queries])) / 2
    assert {row["query"] for row in rows} == {q for qs in asked.values() for q in qs}
    assert outcome.metrics["distracted"].value == _mean_pct(list(hits.values()))
    # on the unedited model the method row equals the No-edit row: delta 0 for every record
    assert outcome.metrics["delta"].records == {r.id: 0.0 for r in ctx.records}
    no_edit, _ = probe.no_edit(ctx, base)
    assert no_edit.metrics["distracted"].value == outcome.metrics["distracted"].value
    assert "flag" in no_edit.details and "flag" in outcome.details
    again = probe.measure(ctx, "baseline", None)  # the seeded choice is reproducible
    assert [q["query"] for q in again["asked"]] == [q["query"] for q in base["asked"]]


def test_known_only_keeps_the_facts_the_model_knows(ctx):
    ctx.config.battery = BatteryConfig(known_only=True)
    known = {r.id for r in ctx.records if _em(ctx, [(r.query, r.target_true)])[0]}
    for name in ("heldout-negation", "distraction"):
        base = PROBES[name].measure(ctx, "baseline", None)
        after = PROBES[name].measure(ctx, "positive", base)
        assert {q["record_id"] for q in after["asked"]} <= known, name


def test_zsre_questions_and_records_without_paraphrases_are_skipped_with_reasons():
    question = EditRecord(id="q", subject="Ramalinaceae", template="Which family does {} belong to?",
                          target_new="Lecanorales", is_question=True,
                          paraphrase_prompts=("What family are Ramalinaceae?",))
    plain = EditRecord(id="p", subject="X", template="{} is a citizen of", target_new="France")
    pairs, alts, skipped = plan_queries([question, plain])
    assert [p["negated"] for p in pairs] == ["What family are not Ramalinaceae?"]
    assert [a["query"] for a in alts] == ["It is not true that X is a citizen of"]
    assert skipped == {SKIP_QUESTION_ALT: 1, SKIP_NO_PARAPHRASE: 1}


def test_no_editor_training_form_marks_these_cells():
    # what defend, FT's and LTE's augmentation and RLEdit train on: the held-out forms stay unmarked
    trained = frozenset({QueryForm.POSITIVE, QueryForm.NEGATED, QueryForm.PREFIXED, QueryForm.PARAPHRASE})
    for name in ("heldout-negation", "distraction"):
        assert trained_metrics(PROBES[name].metric_forms, trained) == [], name
    assert trained_metrics(PROBES["heldout-negation"].metric_forms, frozenset({QueryForm.NEGATED_PARAPHRASE}))


def test_both_probes_are_opt_in_for_their_cost():
    # docs/battery.md#cost: with them the battery would pass 30 % of a run's evaluation time
    assert not {"heldout-negation", "distraction"} & set(default_probes())


# --- every standard dataset format, in a tiny run --------------------------------------------

FORMATS = {  # file (under ../shared/data, or the paper's layout written here) -> dataset key
    "counterfact/counterfact_filtered.json": "counterfact_filtered",  # CounterFact (ROME)
    "counterfact/counterfact-edit.json": "counterfact-edit",  # EasyEdit flat
    "zsre/zsre_mend_edit.json": "zsre_mend_edit",  # zsRE (MEND)
    "wiki_counterfact/test_cf.json": "test_cf",  # KnowEdit WikiData-Counterfact
    "mquake/MQuAKE-hard.json": "MQuAKE-hard",  # MQuAKE
    "paper": "mcf",  # the paper authors' layout
}


@pytest.fixture(scope="module")
def formats_run(run_ws, shared_data):
    """One tiny run over every format (3 records each), with the two probes and efficacy."""
    ws = run_ws
    paper = ws["root"] / "mcf.json"
    paper.write_text(json.dumps(paper_records(3)))
    paths = [str(paper) if f == "paper" else str(shared_data / f) for f in FORMATS]
    cfg = config(ws, ws["root"] / "formats", datasets=tuple(paths), n=3,
                 probes=("heldout-negation", "distraction", "efficacy"))
    return parse_summary(run_experiment(cfg, progress=False))


@pytest.mark.parametrize("path", list(FORMATS))
def test_each_format_is_measured_or_skipped_with_a_reason(formats_run, path):
    key = FORMATS[path]
    data = formats_run.datasets[key]
    (row,) = [r for r in formats_run.results if r.dataset == key]
    assert "distraction" in data.probes  # it needs nothing but the edit itself
    assert set(row.probes["distraction"].metrics) == {"distracted", "delta"}
    assert "heldout-negation" in data.probes  # every format has a declarative prompt or a paraphrase
    outcome = row.probes["heldout-negation"]
    metrics = set(outcome.metrics)
    skipped = outcome.details["skipped"]
    if "NPara" not in metrics:  # MQuAKE, the paper's file here: no paraphrases
        assert skipped.get(SKIP_NO_PARAPHRASE) == 3
    if "NAlt" not in metrics:  # zsRE: questions
        assert skipped.get(SKIP_QUESTION_ALT) == 3
    assert metrics, skipped
    for metric in (*outcome.metrics.values(), *row.probes["distraction"].metrics.values()):
        assert metric.label and metric.higher_is_better is False and metric.value == metric.value
    no_edit = data.no_edit.get("heldout-negation")
    if key == "zsre_mend_edit":  # no old object: no No-edit value, the note says why
        assert no_edit is not None and not no_edit.metrics and no_edit.details["note"]
