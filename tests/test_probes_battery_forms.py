"""The question-forms and two-choice battery probes (docs/battery.md): hand-computed values on
the trained tiny model, the user question table (override, a bad one refused before work),
and the default set on every standard dataset format (a random tiny model)."""

from __future__ import annotations

import json

import pytest
import torch
from test_paper_files import paper_records
from test_runs_helpers import counterfact_records

from editprobe.data import load_records
from editprobe.data.question_forms import QuestionTableError, load_question_table, question_table
from editprobe.data.records import EditRecord
from editprobe.models.tokens import continuation_ids
from editprobe.probes.base import PROBES, ProbeContext, default_probes
from editprobe.probes.battery import BatteryConfig, floor_flag
from editprobe.probes.exact import exact_match_batch
from editprobe.probes.generation import query_ids
from editprobe.probes.questions import NO_ENTRY, QUESTION_DATASET

# The tiny facts' templates are verb-less, so the shipped table has no entry for them.
TABLE = ('"The mother tongue of {}": {question: "What is the mother tongue of {}?", '
         'cloze: "the mother tongue of {}"}\n'
         '"The birthplace of {}": {question: "Where was {} born?", cloze: "the birthplace of {}"}\n')


class Config:
    def __init__(self, table=None, seed=0, known_only=False):
        self.seed = seed
        self.battery = BatteryConfig(question_table=table, known_only=known_only)


def _records(n=6) -> list[EditRecord]:
    out = []
    for r in counterfact_records(n):
        rw = r["requested_rewrite"]
        out.append(EditRecord(id=str(r["case_id"]), subject=rw["subject"], template=rw["prompt"],
                              target_new=rw["target_new"]["str"], target_true=rw["target_true"]["str"]))
    return out


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("q") / "questions.yaml"
    path.write_text(TABLE)
    return str(path)


@pytest.fixture(scope="module")
def trained():
    from tiny_trained import fresh

    torch.set_num_threads(1)
    return fresh()


def _ctx(loaded, records, config) -> ProbeContext:
    return ProbeContext(dataset="d", records=records, plan=None, model=loaded.model, tokenizer=loaded.tokenizer,
                        config=config)


def _run(probe, ctx):
    base = probe.measure(ctx, "baseline", None)
    after = probe.measure(ctx, "positive", base)
    no_edit, base_rows = probe.no_edit(ctx, base)
    row, rows = probe.combine(ctx, {"baseline": base, "positive": after}, {})
    return no_edit, base_rows, row, rows


def _percent(hits):
    return round(100 * sum(hits) / len(hits), 1)


def test_question_forms_equal_exact_match_by_hand(trained, table):
    records = _records()
    ctx = _ctx(trained, records, Config(table))
    no_edit, base_rows, row, rows = _run(PROBES["question-forms"], ctx)
    tok, model = trained.tokenizer, trained.model
    lower = {r.id: r.query[0].lower() + r.query[1:] for r in records}
    question = {r.id: ("What is the mother tongue of {}?" if "mother" in r.template else "Where was {} born?")
                .format(r.subject) for r in records}
    for outcome, target in ((no_edit, "target_true"), (row, "target_new")):
        q_hits = exact_match_batch(model, tok, [(f"Q: {question[r.id]} A:", getattr(r, target)) for r in records])
        c_hits = exact_match_batch(model, tok, [(lower[r.id], getattr(r, target)) for r in records])
        assert outcome.value("question") == _percent(q_hits) and outcome.metrics["question"].n == 6
        assert outcome.value("cloze") == _percent(c_hits)
        assert outcome.metrics["cloze"].records == {r.id: 100.0 * h for r, h in zip(records, c_hits)}
    # the cloze is not trivially 0 or 100 on this model: the numbers above are informative
    assert 0 < no_edit.value("cloze") < 100
    assert row.table == "battery" and row.details["sources"]["question"] == {"table": 6}
    assert {r["setting"] for r in rows} == {"question", "cloze"} and all(r["edited_with"] == "positive" for r in rows)
    assert base_rows[0]["expected"] == records[0].target_true and base_rows[0]["edited_with"] == "none"
    assert row.details["flag"] == no_edit.details["flag"] == floor_flag(no_edit.value("question"))


def test_a_records_own_fields_win_and_a_template_without_entry_is_skipped_and_counted(trained, table):
    own = _records(2)[0].model_copy(update={"extra": {"question": "Q: Which language did {} learn first? A:",
                                                      "cloze": "the mother tongue of {} ___"}})
    stray = EditRecord(id="x", subject="Alice", template="{} likes", target_new="Paris", target_true="Rome")
    ctx = _ctx(trained, [own, stray], Config(table))
    after = PROBES["question-forms"].measure(ctx, "positive", None)
    asked = {s["setting"]: s["query"] for s in after["samples"]}
    assert asked == {"question": f"Q: Which language did {own.subject} learn first? A:",
                     "cloze": f"the mother tongue of {own.subject}"}
    assert after["sources"]["question"] == {"record": 1} and after["skipped"]["question"] == {NO_ENTRY: 1}
    row, _ = PROBES["question-forms"].combine(ctx, {"positive": after}, {})
    assert row.metrics["question"].n == 1  # n counts the records asked only


def test_two_choice_equals_the_letter_probabilities_by_hand(trained, table):
    records = _records()
    ctx = _ctx(trained, records, Config(table, seed=3))
    no_edit, base_rows, row, rows = _run(PROBES["two-choice"], ctx)
    tok, model = trained.tokenizer, trained.model

    def pick(query):
        ids = torch.tensor([query_ids(tok, query)])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)
        (a,), (b,) = continuation_ids(tok, query, "A"), continuation_ids(tok, query, "B")
        return "A" if logp[a] >= logp[b] else "B"

    for outcome, sample_rows, target, other in ((no_edit, base_rows, "target_true", "target_new"),
                                                (row, rows, "target_new", "target_true")):
        both, either, a_share = [], [], []
        for r in records:
            question = ("What is the mother tongue of {}?" if "mother" in r.template else "Where was {} born?"
                        ).format(r.subject)
            t, o = getattr(r, target), getattr(r, other)
            first = pick(f"Q: {question} A) {t} B) {o} Answer:")
            second = pick(f"Q: {question} A) {o} B) {t} Answer:")
            both.append(first == "A" and second == "B")
            either.append(first == "A" or second == "B")
            a_share.append(((first == "A") + (second == "A")) / 2)
        assert outcome.value("both") == _percent(both) and outcome.metrics["both"].n == 6
        assert outcome.value("any") == _percent(either)
        assert outcome.value("A-bias") == round(100 * sum(a_share) / len(a_share), 1)
        assert len(sample_rows) == 12 and sum(s["main"] for s in sample_rows) == 6  # both orders, one main each
    assert row.details["chance"]["both"] == 25.0 and "flag" in no_edit.details


def test_two_choice_without_an_old_object_offers_another_target_under_the_template_by_seed(trained, table):
    records = [r.model_copy(update={"target_true": None}) for r in _records()]
    ctx = _ctx(trained, records, Config(table, seed=1))
    base = PROBES["two-choice"].measure(ctx, "baseline", None)
    assert base["samples"] == [] and sum(base["skipped"].values()) == 6  # no true fact to ask the unedited model
    after = PROBES["two-choice"].measure(ctx, "positive", base)
    same = {r.id: {o.target_new for o in records if o.template == r.template} - {r.target_new} for r in records}
    for s in after["samples"]:
        rec = next(r for r in records if r.id == s["record_id"])
        offered = s["query"].split("A) ")[1].split(" B) ")
        offered = {offered[0], offered[1].removesuffix(" Answer:")} - {rec.target_new}
        assert offered <= same[rec.id] and len(offered) == 1
    assert after["samples"] == PROBES["two-choice"].measure(ctx, "positive", base)["samples"]  # seeded


def test_known_only_restricts_to_the_facts_the_unedited_model_knows(trained, table):
    records = _records()
    known = [r.id for r, hit in zip(records, exact_match_batch(trained.model, trained.tokenizer,
                                                                [(r.query, r.target_true) for r in records])) if hit]
    ctx = _ctx(trained, records, Config(table, known_only=True))
    base = PROBES["question-forms"].measure(ctx, "baseline", None)
    after = PROBES["question-forms"].measure(ctx, "positive", base)
    assert base["known"] == known and {s["record_id"] for s in after["samples"]} == set(known)


def test_the_user_table_overrides_the_shipped_one_and_a_bad_one_is_one_line(tmp_path):
    shipped = question_table()
    assert shipped.get("The mother tongue of {} is").question == "What is the mother tongue of {}?"
    mine = tmp_path / "mine.yaml"
    mine.write_text('"The mother tongue of {} is": {question: "Which language did {} grow up with?"}\n')
    merged = question_table(mine)
    assert merged.get("The mother tongue of {} is").question == "Which language did {} grow up with?"
    assert merged.get("The mother tongue of {} is").cloze is None  # the user's entry replaces the whole entry
    assert merged.get("{} is a citizen of") == shipped.get("{} is a citizen of")
    for text, says in (('"{} is": {question: "Who is it?"}\n', "exactly one"),
                       ('"{} is": {question: "Who is {}?", closure: "x {}"}\n', "unknown key"),
                       ('"{} is": "Who is {}?"\n', "must be a mapping"),
                       ('- a\n', "must be a mapping")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(QuestionTableError) as err:
            load_question_table(bad)
        assert str(bad) in str(err.value) and says in str(err.value) and "\n" not in str(err.value)


def test_a_bad_question_table_fails_the_run_plan_before_work(run_ws, tmp_path):
    from test_runs_helpers import config

    from editprobe.runs.plan import RunPlan

    bad = tmp_path / "bad.yaml"
    bad.write_text('"{} is": {question: "Who?"}\n')
    with pytest.raises(QuestionTableError, match="bad.yaml"):
        RunPlan.build(config(run_ws, tmp_path / "out", battery={"question_table": str(bad)}))


# --- the default set on every standard dataset format (a random tiny model) ---------------------
FORMATS = {  # path under shared/data (or "paper": written here) -> what question-forms asks
    "counterfact/counterfact_filtered.json": "table",
    "counterfact/counterfact-edit.json": "table",  # EasyEdit flat
    "zsre/zsre_mend_edit.json": "prompt (already a question)",
    "wiki_counterfact/test_cf.json": "table",  # KnowEdit WCF
    "mquake/MQuAKE-hard.json": "record",
    "paper": "record",
}


@pytest.fixture(scope="module")
def random_model():
    from editprobe.models.tiny import tiny_model

    torch.set_num_threads(1)
    return tiny_model("llama", seed=0)


@pytest.mark.parametrize("path", list(FORMATS))
def test_the_default_set_on_a_standard_format(random_model, shared_data, tmp_path, path):
    if path == "paper":
        file = tmp_path / "mcf.json"
        file.write_text(json.dumps(paper_records(4)))
        records = load_records(file).records
    else:
        records = load_records(shared_data / path, limit=8).records
    assert {"question-forms", "two-choice"} <= set(default_probes())
    ctx = _ctx(random_model, records, Config())
    for name in ("question-forms", "two-choice"):
        probe = PROBES[name]
        assert probe.default and probe.table == "battery"
        if not probe.applies_to(ctx):
            pytest.fail(f"{name} does not apply to {path}")
        no_edit, _, row, rows = _run(probe, ctx)
        for metric in row.metrics.values():
            assert metric.label and (metric.value is None or 0 <= metric.value <= 100)
        skipped = row.details["skipped"]
        if name == "question-forms":
            assert FORMATS[path] in row.details["sources"]["question"], row.details
            asked = row.metrics["question"].n + sum(skipped["question"].values())
            assert asked == len(records)  # every record asked or skipped with its reason
            if path.startswith("zsre"):
                assert skipped["cloze"] == {QUESTION_DATASET: len(records)}
        else:
            assert row.metrics["both"].n + sum(skipped.values()) == len(records)
            if path.startswith("zsre"):  # no old object: no No-edit row numbers, every record skipped there
                assert no_edit.metrics["both"].value is None
