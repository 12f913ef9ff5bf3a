"""Bad data files, records, options, hparams and run configs: one line each, before any work
(the harness: failure_harness.py)."""

from __future__ import annotations

import json

from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, data_file, drop, edit_args, fact_records, hparams_file, inject_bug, parametrize, run_args,
    without, write, ws)


def _one_method(args: list[str], method: str) -> list[str]:
    """``args`` with its one ``--method`` replaced (edit takes exactly one)."""
    i = args.index("--method")
    return args[: i + 1] + [method] + args[i + 2:]


CASES = [
    Case("data-missing-file", lambda ws, t: edit_args(ws, t / "out", data=t / "nope.json"),
         ("nope.json", "no such file")),
    Case("data-empty-file", lambda ws, t: edit_args(ws, t / "out", data=write(t / "e.json", "")), ("e.json", "is empty")),
    Case("data-not-json", lambda ws, t: edit_args(ws, t / "out", data=write(t / "x.json", "[{oops")),
         ("x.json", "not valid JSON")),
    Case("data-not-utf8", lambda ws, t: edit_args(ws, t / "out", data=write(t / "b.json", b"[\xff\xfe]")),
         ("b.json", "not UTF-8")),
    Case("data-one-object", lambda ws, t: edit_args(ws, t / "out", data=write(t / "o.json", '{\n  "a": 1\n}')),
         ("o.json", "single JSON object")),
    Case("data-unknown-format", lambda ws, t: edit_args(ws, t / "out", data=write(t / "u.json", '[{"foo": 1}]')),
         ("u.json", "unrecognised dataset format")),
    Case("data-record-missing-field",
         lambda ws, t: edit_args(ws, t / "out", data=data_file(t, fact_records(fix={1: drop("target_new")}))),
         ("bad.json", "record 1", "target_new")),
    Case("run-checks-every-record-not-the-first",
         lambda ws, t: run_args(ws, t / "out", "--n", "6", data=data_file(t, fact_records(fix={5: drop("subject")}))),
         ("bad.json", "record 5", "subject")),
    Case("data-template-without-placeholder",
         lambda ws, t: edit_args(ws, t / "out", data=data_file(t, fact_records(
             fix={0: lambda r: r["requested_rewrite"].update(prompt="no placeholder")}))),
         ("bad.json", "record 0", "prompt 'no placeholder'")),
    Case("data-duplicate-ids",
         lambda ws, t: edit_args(ws, t / "out", data=data_file(t, fact_records(fix={1: lambda r: r.update(case_id=0)}))),
         ("bad.json", "record 1", "duplicate id")),
    Case("data-builtin-typo", lambda ws, t: edit_args(ws, t / "out", data="counterfact-smaple"),  # type: ignore[arg-type]
         ("counterfact-smaple",)),    Case("edit-n-zero", lambda ws, t: edit_args(ws, t / "out", "--n", "0"), ("--n", ">= 1")),
    Case("edit-batch-size-zero", lambda ws, t: edit_args(ws, t / "out", "--batch-size", "0"), ("--batch-size", ">= 1")),
    Case("run-n-zero", lambda ws, t: run_args(ws, t / "out", "--n", "0"), ("'n'", ">= 1")),
    Case("run-batch-size-negative", lambda ws, t: run_args(ws, t / "out", "--batch-size", "-1"), ("'batch_size'",)),
    Case("edit-unknown-method", lambda ws, t: _one_method(edit_args(ws, t / "out"), "nope"), ("unknown method 'nope'",)),
    Case("run-unknown-method", lambda ws, t: run_args(ws, t / "out", "--method", "nope"), ("unknown method 'nope'",)),
    Case("set-without-equals", lambda ws, t: edit_args(ws, t / "out", "--set", "v_lr"), ("--set expects key=value",)),
    Case("set-bad-value", lambda ws, t: edit_args(ws, t / "out", "--set", "v_lr=fast"), ("--set v_lr='fast'", "number")),
    Case("set-unknown-field", lambda ws, t: edit_args(ws, t / "out", "--set", "v_lrr=0.1"),
         ("--set v_lrr=0.1", "Extra inputs")),
    Case("edit-bad-dtype", lambda ws, t: edit_args(ws, t / "out", "--dtype", "float8"), ("--dtype", "unknown dtype 'float8'", "bf16")),
    Case("run-bad-dtype", lambda ws, t: run_args(ws, t / "out", "--dtype", "float8"), ("float8", "bf16")),
    Case("threads-zero", lambda ws, t: edit_args(ws, t / "out", "--threads", "0"), ("--threads",)),
    Case("unknown-option", lambda ws, t: edit_args(ws, t / "out", "--bogus"), ("editprobe edit", "--bogus")),
    Case("unknown-command", lambda ws, t: ["nosuchcommand"], ("nosuchcommand",)),
    Case("hparams-file-missing", lambda ws, t: edit_args(ws, t / "out", "--hparams", str(t / "hp.yaml")),
         ("hp.yaml", "cannot read")),
    Case("hparams-yaml-is-a-list",
         lambda ws, t: edit_args(ws, t / "out", "--hparams", str(hparams_file(t, "- layers\n- 1\n"))),
         ("hp.yaml", "mapping")),
    Case("hparams-broken-yaml",
         lambda ws, t: edit_args(ws, t / "out", "--hparams", str(hparams_file(t, "layers: [1, 2\n"))), ("hp.yaml",)),
    Case("hparams-layers-outside-the-model", lambda ws, t: edit_args(ws, t / "out", "--set", "layers=[1, 40]"),
         ("layers [40]", "0..3")),
    Case("run-config-missing", lambda ws, t: ["run", "--config", str(t / "run.yaml"), "--out", str(t / "out")],
         ("run.yaml", "cannot read")),
    Case("run-config-is-a-list",
         lambda ws, t: ["run", "--config", str(write(t / "run.yaml", "- a\n")), "--out", str(t / "out")],
         ("run.yaml", "mapping")),
    Case("run-config-unknown-field",
         lambda ws, t: ["run", "--config", str(write(t / "run.yaml", "bogus: 1\n")), "--out", str(t / "out")],
         ("'bogus'",)),
    Case("run-without-out", lambda ws, t: ["run", "--model", str(ws["model"])], ("--out is required",)),
    Case("run-negation-table-missing",
         lambda ws, t: [*run_args(ws, t / "out"), "--negation-table", str(t / "neg.yaml")], ("neg.yaml",)),
    Case("run-no-record-can-be-negated",  # the tiny data's templates need the negation table
         lambda ws, t: without(run_args(ws, t / "out"), "--negation-table"),
         ("none of its 2 records has a template that can be negated", "--negation-table")),
    Case("numeric-failure-rolls-back", lambda ws, t: edit_args(ws, t / "out", "--set", "v_lr=.nan"),
         ("batch 1 of 1", "rolled back")),
]


@parametrize(CASES)
def test_bad_input(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def test_debug_shows_the_traceback_of_a_bug(ws, tmp_path, monkeypatch):
    inject_bug(monkeypatch)
    result = invoke(["--debug", *edit_args(ws, tmp_path / "out")])
    assert result.exit_code == 1
    assert "Traceback" in result.stderr and "an injected bug" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: internal error")


def test_messages_are_printed_without_markup_or_wrapping(ws, tmp_path):
    """Brackets in a message survive, a [link=...] in a data field stays text, no wrap at 80."""
    bad = fact_records(fix={0: lambda r: r["requested_rewrite"].update(prompt="[link=http://x]click[/link] [bold]x")})
    path = write(tmp_path / ("a-long-directory-name-" * 4) / "bad[1].json", json.dumps(bad))
    result = invoke(edit_args(ws, tmp_path / "out", data=path), env={"COLUMNS": "80"})
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and len(line) > 80
    assert "bad[1].json" in line and "[link=http://x]click[/link]" in line


def test_suspicious_data_is_one_warning_with_a_count(ws, tmp_path):
    records = fact_records(fix={0: lambda r: r["requested_rewrite"]["target_new"].update(
        str=r["requested_rewrite"]["target_true"]["str"]),
        1: lambda r: r["requested_rewrite"]["target_new"].update(str=r["requested_rewrite"]["target_true"]["str"])})
    records.append({**records[2], "case_id": 99})  # the same fact again under another id
    data = data_file(tmp_path, records)
    result = invoke(["data", "inspect", str(data)])
    assert result.exit_code == 0
    assert "2 of 7 records have target_new equal to target_true" in result.stderr
    result = invoke(edit_args(ws, tmp_path / "out", "--n", "7", data=data))
    assert result.exit_code == 0, result.output
    # (the tiny hparams ask for 200 C0 documents of a 100-document corpus: that warning too)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "bad.json" in line]
    assert len(warnings) == 2, result.stderr
    assert "2 of 7 records have target_new equal to target_true" in warnings[0]
    assert "1 records repeat" in warnings[1] and "id 99 repeats id 2" in warnings[1]
