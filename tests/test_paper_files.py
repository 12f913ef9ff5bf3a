"""The paper's own experiment, data side: files in the paper authors' layout (per-record
negated prompts, declarative statements), `data negate --compare`, and zsRE's edit target
(answers[0] by default, alt when asked). Files are written here in that layout from the
tiny model's facts; the authors' files themselves are not shipped (no licence)."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke
from failure_harness import ws  # noqa: F401 - a fixture
from test_runs_helpers import NEGATIONS, counterfact_records

from editprobe.data import load_records
from editprobe.data.negation import RECORD_RULE, RECORD_UNANCHORED_RULE, record_negation, with_opposite
from editprobe.data.options import DatasetOptions
from editprobe.probes import build_negation_plan
from editprobe.probes.factcheck import statement_for


def paper_records(n: int = 4, unanchored: int | None = None) -> list[dict]:
    """CounterFact facts of the tiny model in the paper's layout; each record's own negated
    prompt differs from any rule's ("... is surely not"), record ``unanchored`` names no subject."""
    out = []
    for i, r in enumerate(counterfact_records(n)):
        rw = r["requested_rewrite"]
        query = rw["prompt"].format(rw["subject"])
        out.append({
            "id": i, "subject": rw["subject"], "prompt": rw["prompt"], "target_new": rw["target_new"]["str"],
            "target_true": rw["target_true"]["str"], "target_random": "x", "paraphrase_prompts": [],
            "neighborhood_prompts": [],
            "efficacy_evaluation": [f"{query} {rw['target_true']['str']}.", f"{query} {rw['target_new']['str']}."],
            "cloze": rw["prompt"], "question": f"What is {query}?", "answer_a": rw["target_new"]["str"],
            "answer_b": rw["target_true"]["str"],
            "negetive_prompt": "Not this one at all" if i == unanchored else f"Surely not {query[0].lower()}{query[1:]}",
        })
    return out


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_the_paper_layout_is_detected_and_read_whole(tmp_path):
    loaded = load_records(_write(tmp_path / "mcf.json", paper_records(2)))
    assert loaded.format == "paper" and not loaded.unread  # every field is read, none dropped in silence
    rec = loaded.records[0]
    assert rec.negated_prompt == f"Surely not the mother tongue of {rec.subject}"
    assert rec.statements == (f"{rec.query} {rec.target_true}.", f"{rec.query} {rec.target_new}.")
    assert rec.extra["question"].startswith("What is") and rec.extra["answer_a"] == rec.target_new
    negation = record_negation(rec)
    assert (negation.rule, negation.negated) == (RECORD_RULE, "Surely not the mother tongue of {}")
    # a user's file of this layout may spell the field negated_prompt, and give a template
    mine = [{k.replace("negetive_prompt", "negated_prompt"): v for k, v in r.items()} for r in paper_records(1)]
    mine[0]["negated_prompt"] = "Never {}'s mother tongue"
    assert load_records(_write(tmp_path / "mine.json", mine)).records[0].negated_prompt.startswith("Never ")


def test_a_records_own_negation_wins_and_one_without_its_subject_is_asked_not_edited(tmp_path):
    records = load_records(_write(tmp_path / "mcf.json", paper_records(3, unanchored=2))).records
    plan = build_negation_plan(records)
    assert plan.n_records == 3 and plan.source_counts() == {"record": 3}
    assert [item.editable for item in plan.items] == [True, True, False]
    assert plan.items[2].negation.rule == RECORD_UNANCHORED_RULE
    assert plan.items[2].query("negated") == "Not this one at all"
    assert len(plan.negative_requests()) == 2  # the unanchored record's negated edit is skipped
    assert plan.items[0].request("positive").opposite_template == "Surely not the mother tongue of {}"
    # the request an `edit` job makes carries the same opposite query (FT's augmentation, defend)
    assert with_opposite(records[0]).opposite_template == "Surely not the mother tongue of {}"
    assert with_opposite(records[2]).opposite_template is None


def test_factcheck_asks_a_records_own_statements(tmp_path):
    rec = load_records(_write(tmp_path / "mcf.json", paper_records(1))).records[0]
    assert statement_for(rec, "new") == (rec.statements[1], "record")
    assert statement_for(rec, "old") == (rec.statements[0], "record")


def test_data_negate_compare_counts_and_shows_examples(tmp_path):
    records = paper_records(3)
    records[1]["negetive_prompt"] = records[1]["prompt"].format(records[1]["subject"]) + " isn't"
    path = _write(tmp_path / "mcf.json", records)
    table = tmp_path / "neg.yaml"
    # the table negates as record 1's file prompt does, written out: a contraction apart
    table.write_text("".join(f'"{t}": "{t} is not"\n' for t in NEGATIONS))
    result = invoke(["data", "negate", str(path), "--compare", "--table", str(table)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "3 records with their own negated prompt"
    assert "  contraction only: 1 (33.3%)" in lines and "  different: 2 (66.7%)" in lines
    assert any(line.startswith("  record 1: file ") and "isn't" in line for line in lines)
    plain = invoke(["data", "negate", "counterfact-sample", "--compare"])
    assert plain.exit_code == 2 and "carries its own negated prompt" in plain.stderr


def test_run_uses_each_records_own_negated_prompt_without_a_negation_table(ws, tmp_path):  # noqa: F811
    """The tiny facts' verb-less templates need a negation table; records that carry their
    own negated prompt do not."""
    data = _write(tmp_path / "mcf.json", paper_records(4, unanchored=3))
    out = tmp_path / "run"
    result = invoke(["run", "--model", str(ws["model"]), "--method", "memit", "--data", str(data), "--n", "4",
                     "--batch-size", "2", "--out", str(out), "--hparams", "tiny", "--set",
                     f"mom2_corpus={ws['corpus']}", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "1 of 4 records have a negated prompt without their subject" in result.stderr
    summary = json.loads((out / "summary.json").read_text())
    dataset = summary["datasets"]["mcf"]
    assert dataset["negation_sources"] == {"record": 4} and dataset["n_negated_edits"] == 3
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    pn = {s["record_id"]: s["query"] for s in samples if s["setting"] == "PN" and s["method"] == "memit"}
    assert pn["0"] == paper_records(1)[0]["negetive_prompt"] and pn["3"] == "Not this one at all"
    nn = {s["record_id"] for s in samples if s["setting"] == "NN" and s["method"] == "memit"}
    assert nn == {"0", "1", "2"}
    factcheck = summary["results"][0]["probes"]["factcheck"]
    assert factcheck["details"]["statement_sources"] == {"record": 4}  # the file's own statements


# --- zsRE: answers[0] by default, alt when asked ----------------------------------------------------


def zsre_records(n: int = 4) -> list[dict]:
    """The tiny facts as zsRE (MEND format) records: the true object is answers[0]."""
    out = []
    for i, r in enumerate(counterfact_records(n)):
        rw = r["requested_rewrite"]
        out.append({"subject": rw["subject"], "src": rw["prompt"].format(rw["subject"]),
                    "alt": rw["target_new"]["str"], "answers": [rw["target_true"]["str"]],
                    "rephrase": rw["prompt"].format(rw["subject"]), "loc": "nq question: who is it",
                    "loc_ans": "nobody", "portability": {"New Question": f"Who? {rw['subject']}",
                                                         "New Answer": rw["target_new"]["str"]}})
    return out


def test_zsre_targets_answers_by_default_and_alt_when_asked(tmp_path):
    path = _write(tmp_path / "zsre.json", zsre_records(2))
    rec = load_records(path).records[0]
    assert rec.target_true is None and rec.target_new == zsre_records(1)[0]["answers"][0]
    assert rec.extra["alt"] == zsre_records(1)[0]["alt"] and rec.portability == ()
    assert rec.extra["alt"] in statement_for(rec, "old")[0]  # the paper's false statement uses alt
    alt = load_records(path, options=DatasetOptions(zsre_target="alt")).records[0]
    assert (alt.target_new, alt.target_true) == (zsre_records(1)[0]["alt"], zsre_records(1)[0]["answers"][0])
    assert len(alt.portability) == 1


@pytest.mark.parametrize("target", ["answers", "alt"])
def test_edit_and_run_edit_zsre_toward_the_chosen_target(ws, tmp_path, target):  # noqa: F811
    path = _write(tmp_path / "zsre.json", zsre_records(2))
    table = tmp_path / "neg.yaml"
    table.write_text("".join(f'"{k}": "{v}"\n' for k, v in NEGATIONS.items()))
    common = ["--model", str(ws["model"]), "--method", "memit", "--data", str(path), "--n", "2", "--batch-size", "2",
              "--hparams", "tiny", "--set", f"mom2_corpus={ws['corpus']}", "--threads", "1", "--zsre-target", target]
    edit = invoke(["edit", *common, "--out", str(tmp_path / "edit")])
    assert edit.exit_code == 0, edit.output
    run = invoke(["run", *common, "--out", str(tmp_path / "run"), "--negation-table", str(table)])
    assert run.exit_code == 0, run.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    expected = zsre_records(2)[0]["answers"][0] if target == "answers" else zsre_records(2)[0]["alt"]
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    pp = next(s for s in samples if s["setting"] == "PP" and s["record_id"] == "0")
    assert pp["expected"] == expected
    assert summary["config"]["zsre_target"] == target
    assert summary["datasets"]["zsre"]["targets"].startswith("zsRE answers[0]" if target == "answers" else "zsRE alt")
    assert summary["datasets"]["zsre"]["no_edit"]["negation"]["metrics"] == {}  # questions: no No-edit numbers
    report = invoke(["report", str(tmp_path / "run"), "--out", str(tmp_path / "tables")])
    settings = report.stdout.split("### Settings")[1]
    assert ("zsRE answers[0], no old object" if target == "answers" else "zsRE alt, answers[0] as the old object") \
        in settings  # the report says what zsRE was edited toward
    negation_table = report.stdout.split("### Fact-checking")[0]
    assert "| No edit |" not in negation_table  # and no row of dashes (the paper's A.7: zsRE has no No-edit row)


def test_a_run_saved_before_the_option_resumes_toward_alt(tmp_path):
    from editprobe.runs import RunConfig
    from editprobe.runs.store import read_as_now

    old = {k: v for k, v in RunConfig(datasets=("data/zsre.json",)).identity().items() if k != "zsre_target"}
    assert read_as_now(old)["zsre_target"] == "alt"
    demo = {k: v for k, v in RunConfig().identity().items() if k != "zsre_target"}  # built-in counterfact only
    assert "zsre_target" not in read_as_now(demo) and "zsre_target" not in RunConfig().identity()
