"""Bad input: one clear DataError naming file, record index and field; skip mode lists them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editprobe.data import BadRecord, DataError, load_records


def write(tmp_path: Path, rows, name: str = "data.json") -> Path:
    path = tmp_path / name
    path.write_text(rows if isinstance(rows, str) else json.dumps(rows))
    return path


def flat(subject: str = "Danielle Darrieux", prompt: str | None = None, **extra) -> dict:
    row = {"subject": subject, "prompt": prompt or f"The mother tongue of {subject} is", "target_new": "English", "ground_truth": "French"}
    row.update(extra)
    return row


def counterfact(case_id: int, **rewrite) -> dict:
    rw = {"prompt": "{} was born in", "subject": "Ann", "relation_id": "P19",
          "target_new": {"str": "Rome", "id": "Q1"}, "target_true": {"str": "Oslo", "id": "Q2"}}
    rw.update(rewrite)
    return {"case_id": case_id, "requested_rewrite": rw, "paraphrase_prompts": ["Ann was born in"],
            "neighborhood_prompts": ["Bob was born in"]}


def expect_error(path: Path, index: int | None, field: str | None, message: str, **kwargs) -> DataError:
    with pytest.raises(DataError) as info:
        load_records(path, **kwargs)
    err = info.value
    assert (err.index, err.field) == (index, field)
    text = str(err)
    assert str(path) in text and message in text and "\n" not in text
    if index is not None:
        assert f"record {index}: field '{field}'" in text
    return err


# --- templates ---------------------------------------------------------------------


def test_prompt_without_placeholder_gets_one_at_the_first_subject_mention(tmp_path):
    path = write(tmp_path, [flat("Paris", prompt="Paris is the city that Paris fans love, and Paris is in")])
    rec = load_records(path).records[0]
    assert rec.template == "{} is the city that Paris fans love, and Paris is in"
    assert rec.query == "Paris is the city that Paris fans love, and Paris is in"


def test_prompt_with_placeholder_is_kept(tmp_path):
    rec = load_records(write(tmp_path, [flat("Ann", prompt="{} was born in")])).records[0]
    assert (rec.template, rec.query) == ("{} was born in", "Ann was born in")


def test_subject_not_in_prompt(tmp_path):
    path = write(tmp_path, [flat(), flat("Michel Rocard", prompt="The mother tongue of Rocard is")])
    expect_error(path, 1, "subject", "'Michel Rocard' does not occur in prompt")


def test_two_placeholders_and_stray_braces(tmp_path):
    expect_error(write(tmp_path, [flat("Ann", prompt="{} met {}")]), 0, "prompt", "2 '{}' placeholders")
    expect_error(write(tmp_path, [flat("Ann", prompt="Ann {x} is")]), 0, "prompt", "brace other than")


# --- fields ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "field", "message"),
    [
        (flat(target_new="  "), "target_new", "must not be empty"),
        ({k: v for k, v in flat().items() if k != "target_new"}, "target_new", "missing"),
        (flat(target_new=["English"]), "target_new", "expected a string, got array"),
        (flat(subject=None), "subject", "missing"),
        (flat(rephrase_prompt=["ok", 3]), "rephrase_prompt[1]", "expected a string, got int"),
        (flat(locality_prompt="Bob speaks"), "locality_ground_truth", "missing"),
        (flat(case_id=1.5), "case_id", "expected an integer or string id"),
    ],
)
def test_bad_easyedit_fields(tmp_path, row, field, message):
    expect_error(write(tmp_path, [flat(case_id=0), {"case_id": 1, **row} if "case_id" not in row else row]), 1, field, message)


def test_bad_counterfact_fields_name_the_nested_field(tmp_path):
    path = write(tmp_path, [counterfact(0), counterfact(1, target_new={"str": "", "id": "Q1"})])
    expect_error(path, 1, "requested_rewrite.target_new.str", "must not be empty")
    path = write(tmp_path, [counterfact(0), counterfact(1, target_new="Rome")])
    expect_error(path, 1, "requested_rewrite.target_new", "expected an object, got string")
    row = counterfact(0)
    del row["requested_rewrite"]["target_true"]
    expect_error(write(tmp_path, [counterfact(1), row]), 1, "requested_rewrite.target_true", "neighborhood_prompts")


def test_bad_knowedit_nested_answer(tmp_path):
    row = flat(locality={"Relation_Specificity": [{"prompt": "Ann's father is", "ground_truth": ["Bob", 7]}]})
    expect_error(write(tmp_path, [row]), 0, "locality.Relation_Specificity[0].ground_truth[1]", "got int")
    row = flat(portability={"Reasoning": [{"prompt": "Ann's capital is", "ground_truth": [[""]]}]})
    expect_error(write(tmp_path, [row]), 0, "portability.Reasoning[0].ground_truth", "at least one non-empty answer")


def test_bad_zsre_and_mquake_fields(tmp_path):
    zsre = {"subject": "Ann", "src": "Where was Ann born?", "alt": "Rome", "answers": [], "rephrase": "Ann's birthplace?"}
    expect_error(write(tmp_path, [zsre]), 0, "answers", "at least one non-empty answer")
    mquake = {"case_id": 9, "requested_rewrite": [counterfact(0)["requested_rewrite"], {"prompt": "{} is", "subject": "Bob"}],
              "questions": ["Q?"], "new_answer": "Rome"}
    expect_error(write(tmp_path, [mquake]), 0, "requested_rewrite[1].target_new", "missing")


def test_duplicate_ids(tmp_path):
    expect_error(write(tmp_path, [counterfact(3), counterfact(3)]), 1, "case_id", "duplicate id '3' (first used by record 0)")


def test_record_that_is_not_an_object(tmp_path):
    expect_error(write(tmp_path, [flat(), ["not", "an", "object"]]), 1, "(record)", "expected a JSON object, got array")


# --- whole-file problems -------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ('[{"subject": "Ann",', "not valid JSON"),
        ('{\n  "subject": "Ann"\n}\n', "holds a single JSON object"),
        ('[{"foo": 1}]', "unrecognised dataset format (record keys ['foo'])"),
    ],
)
def test_unreadable_files(tmp_path, content, message):
    expect_error(write(tmp_path, content), None, None, message)


def test_missing_file_and_unknown_format(tmp_path):
    expect_error(tmp_path / "nope.json", None, None, "no such file, and not a built-in dataset")
    expect_error(write(tmp_path, [flat()]), None, None, "unknown format 'cf'", format="cf")


def test_explicit_format_reports_fields_of_that_format(tmp_path):
    expect_error(write(tmp_path, [flat()]), 0, "requested_rewrite", "missing", format="counterfact")


def test_bad_jsonl_line_is_a_bad_record(tmp_path):
    path = write(tmp_path, json.dumps(flat()) + "\n{oops\n" + json.dumps(flat("Bob", case_id=7)) + "\n", name="d.jsonl")
    expect_error(path, 1, "(record)", "line 2: not valid JSON")
    result = load_records(path, on_bad_record="skip")
    assert [r.subject for r in result.records] == ["Danielle Darrieux", "Bob"] and result.skipped[0].index == 1


# --- skip mode -----------------------------------------------------------------------


def test_skip_mode_counts_and_lists_every_bad_record(tmp_path):
    rows = [flat(case_id=0), flat(case_id=1, target_new=""), flat(case_id=2),
            flat("Bob", prompt="The mother tongue of Danielle Darrieux is", case_id=3), {"case_id": 4}]
    result = load_records(write(tmp_path, rows), on_bad_record="skip")
    assert [r.id for r in result.records] == ["0", "2"]
    assert result.n_total == 5 and result.n_skipped == 3
    assert result.skipped == [
        BadRecord(1, "target_new", "must not be empty"),
        BadRecord(3, "subject", "'Bob' does not occur in prompt 'The mother tongue of Danielle Darrieux is'"),
        BadRecord(4, "subject", "missing"),
    ]
    assert len(result.records) + result.n_skipped == result.n_total  # nothing dropped silently


def test_limit_counts_good_records_in_skip_mode(tmp_path):
    rows = [flat(case_id=0, target_new=""), flat(case_id=1), flat(case_id=2), flat(case_id=3)]
    result = load_records(write(tmp_path, rows), on_bad_record="skip", limit=2)
    assert [r.id for r in result.records] == ["1", "2"] and result.n_skipped == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_bad_record"):
        load_records("counterfact-sample", on_bad_record="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="limit"):
        load_records("counterfact-sample", limit=-1)
