"""`editprobe data inspect` and `editprobe data list` through the real command line (cli_helpers.invoke)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import invoke


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def bad_file(tmp_path: Path) -> Path:
    rows = [
        {"case_id": 0, "subject": "Ann", "prompt": "Ann was born in", "target_new": "Rome"},
        {"case_id": 1, "subject": "Bob", "prompt": "Ann was born in", "target_new": "Oslo"},
        {"case_id": 2, "subject": "Cid", "prompt": "Cid was born in", "target_new": ""},
    ]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(rows))
    return path


def test_inspect_builtin_sample_via_main_app():
    result = invoke(["data", "inspect", "counterfact-sample"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "format: counterfact (detected" in out
    assert "records loaded    │ 300" in out and "entries skipped   │ 0" in out
    assert "with old target   │ 300" in out
    assert "record 0" in out and "record 1" in out and "record 2" not in out
    assert "Danielle Darrieux" in out and "[neighborhood]" in out  # dataset text is not eaten as markup
    assert "problems: none" in out


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is absent")
def test_inspect_mquake_counts_cases_and_records():
    result = invoke(["data", "inspect", str(SHARED / "mquake/MQuAKE-hard.json")])
    assert result.exit_code == 0, result.output
    assert "format: mquake" in result.output
    assert "entries in file   │ 429" in result.output and "records loaded    │ 1716" in result.output
    assert "record 7417_0" in result.output


def test_bad_record_exits_2_with_one_error_line(tmp_path):
    path = bad_file(tmp_path)
    result = invoke(["data", "inspect", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{path}: record 1: field 'subject': 'Bob' does not occur in prompt" in lines[0]
    assert "--on-bad-record skip" in lines[0]
    assert "Traceback" not in result.output and result.stdout == ""


def test_skip_mode_prints_the_problems_table(tmp_path):
    result = invoke(["data", "inspect", str(bad_file(tmp_path)), "--on-bad-record", "skip"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "records loaded    │ 1" in out and "entries skipped   │ 2" in out
    assert "problems" in out and "record (0-based)" in out
    assert "│ 1 " in out and "subject" in out and "│ 2 " in out and "must not be empty" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["inspect", "no/such/file.json"], "no such file, and not a built-in dataset"),
        (["inspect", "counterfact-sample", "--format", "nope"], "unknown format 'nope'"),
    ],
)
def test_file_level_errors_exit_2(args, message):
    result = invoke(["data", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert "Traceback" not in result.output


def test_explicit_format_and_limit(tmp_path):
    result = invoke(["data", "inspect", "counterfact-sample", "--format", "counterfact", "--limit", "5"])
    assert result.exit_code == 0, result.output
    assert "(given;" in result.output and "records loaded    │ 5" in result.output


def test_list_shows_builtin_data_and_formats():
    result = invoke(["data", "list"])
    assert result.exit_code == 0, result.output
    for name in ("counterfact-sample", "wikitext-sample", "CC BY-SA 3.0", "mquake", "knowedit", "easyedit"):
        assert name in result.output


def test_negate_lists_every_distinct_template_with_its_rule(tmp_path):
    data = tmp_path / "cf.json"
    data.write_text(json.dumps([
        {"case_id": i, "requested_rewrite": {"prompt": prompt, "subject": "Danielle Darrieux", "relation_id": rid,
                                             "target_new": {"str": "English"}, "target_true": {"str": "French"}}}
        for i, (prompt, rid) in enumerate([("The mother tongue of {} is", "P103"), ("The mother tongue of {} is", "P103"),
                                           ("{} speaks", None), ("Zorp {} glorp", None)])
    ]))
    table = tmp_path / "neg.yaml"
    table.write_text('"{} speaks": "{} never speaks"\n')
    out_csv = tmp_path / "neg.csv"
    result = invoke(["data", "negate", str(data), "--table", str(table), "--csv", str(out_csv)],
                    env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "3 distinct templates" in result.output
    rows = out_csv.read_text().splitlines()
    assert rows[0] == "template,relation,negated,rule,reason" and len(rows) == 4
    assert rows[1].startswith("The mother tongue of {} is,P103,The mother tongue of {} is not,")
    assert rows[2].startswith("{} speaks,,{} never speaks,user-table")
    assert ",,unnegatable" in rows[3] or "not negated" in result.output  # reported, not kept positive
    assert "not negated" in result.output


def test_negate_bad_table_is_one_clear_error(tmp_path):
    table = tmp_path / "neg.yaml"
    table.write_text("- not a mapping\n")
    result = invoke(["data", "negate", "counterfact-sample", "--table", str(table)])
    assert result.exit_code == 2 and str(table) in result.output
