"""Checks before work (issue #23, item 6): a record longer than the model's context, five
config errors that used to surface only after the model load or the baseline, unknown keys
in nested config sections, fields a dataset format does not read, ``--resume`` advertised
only where it can help, and ``--address`` probing a Ray head for real. Each bad input is one
line before the model loads (the harness: failure_harness.py)."""

from __future__ import annotations

import http.server
import json
import re
import threading
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, data_file, edit_args, fact_records, parametrize, run_args, write, ws)

from editprobe.errors import ModelReferenceError

LONG_SUBJECT = "Alice " * 300  # about 300 tokens of the tiny tokenizer; its model has 256 positions


def no_model_load(mp: pytest.MonkeyPatch) -> None:
    """Any model load is a bug here (exit 1), so a case passes only if it ends before one."""
    import editprobe.models as models

    def load_model(*_a, **_k):
        raise AssertionError("the model was loaded before the check")

    mp.setattr(models, "load_model", load_model)


def stop_at_model_load(mp: pytest.MonkeyPatch) -> None:
    """The job stops (exit 2) where the model would load: what came before is on stderr."""
    import editprobe.models as models

    def load_model(*_a, **_k):
        raise ModelReferenceError("stopped where the model loads (test)")

    mp.setattr(models, "load_model", load_model)


def long_record(index: int, where: str = "subject"):
    def change(records: list[dict]) -> None:
        rewrite = records[index]["requested_rewrite"]
        if where == "subject":
            rewrite["subject"] = LONG_SUBJECT.strip()
        else:
            records[index][where] = [f"{rewrite['subject']} {'spoke ' * 300}"]
    return change


def long_data(tmp: Path, index: int = 1, where: str = "subject") -> Path:
    records = fact_records()
    long_record(index, where)(records)
    return data_file(tmp, records)


def dev_data(tmp: Path) -> Path:
    """Dev records whose templates the grammar rules negate (tune asks the negated prompts)."""
    records = [{"prompt": "The mother tongue of {} is", "subject": name, "target_new": "English",
                "ground_truth": "Italian"} for name in ("Zorblat Quenn", "Mirtha Vabbo", "Kelso Drum")]
    return write(tmp / "dev.json", json.dumps(records))


def run_config(tmp: Path, ws: dict, **fields) -> Path:
    base = {"model": str(ws["model"]), "methods": ["memit"], "datasets": [str(ws["data"])], "n": 2,
            "batch_size": 2, "hparams": "tiny", "overrides": {"mom2_corpus": str(ws["corpus"])},
            "negation_table": str(ws["negations"]), "out": str(tmp / "out")}
    return write(tmp / "run.yaml", yaml.safe_dump({**base, **fields}))


def negation_table(tmp: Path, negated: str) -> Path:
    return write(tmp / "neg.yaml", f'"The mother tongue of {{}}": "{negated}"\n'
                                   '"The birthplace of {}": "Never the birthplace of {}"\n')


def study_file(tmp: Path, ws: dict, entry: dict) -> Path:
    run = {"models": [str(ws["model"])], "methods": ["memit"], "datasets": [str(ws["data"])], **entry}
    defaults = {"n": 2, "batch_size": 2, "hparams": "tiny", "negation_table": str(ws["negations"])}
    return write(tmp / "study.yaml", yaml.safe_dump({"defaults": defaults, "runs": [run]}))


CASES = [
    # --- the token cap, checked with the tokenizer alone -----------------------------------------
    Case("checks-record-longer-than-the-context",
         lambda ws, t: run_args(ws, t / "out", "--n", "6", data=long_data(t, 4)),
         ("bad.json: record 4: field 'prompt': the prompt with its subject and target has",
          "above max_prompt_tokens 256 (the model's context length)", "--on-bad-record skip"),
         inject=no_model_load),
    Case("checks-edit-record-over-max-prompt-tokens",
         lambda ws, t: edit_args(ws, t / "out", "--max-prompt-tokens", "6"),
         ("cf.json: record 0: field 'prompt'", "above max_prompt_tokens 6;"), inject=no_model_load),
    Case("checks-paraphrase-longer-than-the-context",
         lambda ws, t: run_args(ws, t / "out", data=long_data(t, 1, "paraphrase_prompts")),
         ("bad.json: record 1: field 'paraphrase_prompts[0]': the prompt with its answer has",), inject=no_model_load),
    Case("checks-demo-over-max-prompt-tokens",
         lambda ws, t: ["demo", "--config", str(run_config(t, ws, datasets=[str(long_data(t, 1))])), "--out",
                        str(t / "out"), "--max-prompt-tokens", "100"],
         ("bad.json: record 1: field 'prompt'", "above max_prompt_tokens 100;"), inject=no_model_load),
    Case("checks-tune-dev-record-over-max-prompt-tokens",
         lambda ws, t: ["tune", "--model", str(ws["model"]), "--data", str(dev_data(t)), "--out", str(t / "hp.yaml"),
                        "--hparams", "tiny", "--n", "2", "--batch-size", "1", "--trials", "1",
                        "--max-prompt-tokens", "8"],
         ("dev.json: record id 0: field 'prompt'", "above max_prompt_tokens 8; shorten it or pass a larger "
          "--max-prompt-tokens"), out=lambda t: t / "hp.yaml", inject=no_model_load),
    Case("checks-trace-record-longer-than-the-context",
         lambda ws, t: ["trace", "--model", str(ws["model"]), "--data", str(long_data(t, 0)), "--n", "2",
                        "--out", str(t / "out")],
         ("bad.json: record 0: field 'prompt'", "above max_prompt_tokens 256 (the model's context length); "
          "shorten it"), inject=no_model_load),
    Case("checks-max-prompt-tokens-zero", lambda ws, t: run_args(ws, t / "out", "--max-prompt-tokens", "0"),
         ("'max_prompt_tokens'", ">= 1"), inject=no_model_load),
    # --- config errors that used to surface after the model load or the baseline ------------------
    Case("checks-mom2-n-samples-zero", lambda ws, t: run_args(ws, t / "out", "--set", "mom2_n_samples=0"),
         ("--set mom2_n_samples=0", "greater than or equal to 1"), inject=no_model_load),
    Case("checks-template-groups-zero", lambda ws, t: run_args(ws, t / "out", "--set", "template_groups=[[0, 0]]"),
         ("--set template_groups=[[0, 0]]", "group 0 is [0, 0]"), inject=no_model_load),
    Case("checks-kl-prompt-without-subject-slot", lambda ws, t: run_args(ws, t / "out", "--set", "kl_prompt=is a"),
         ("--set kl_prompt='is a'", "exactly one '{}'"), inject=no_model_load),
    Case("checks-factcheck-unknown-placeholder",
         lambda ws, t: ["run", "--config", str(run_config(t, ws, factcheck={"statement_template": "{query} {targt}"}))],
         ("run config: field 'factcheck.statement_template'", "uses {targt}", "{query}, {target}"),
         inject=no_model_load),
    Case("checks-negation-table-named-field",
         lambda ws, t: [*run_args(ws, t / "out"), "--negation-table",
                        str(negation_table(t, "Not the {x} mother tongue of {}"))],
         ("neg.yaml: entry 'The mother tongue of {}'", "may hold only '{}'", "not {x}"), inject=no_model_load),
    Case("checks-negation-table-lone-brace",
         lambda ws, t: [*run_args(ws, t / "out"), "--negation-table",
                        str(negation_table(t, "Not the mother tongue of {}}"))],
         ("neg.yaml: entry 'The mother tongue of {}'", "Single '}'"), inject=no_model_load),
    # --- unknown keys in nested config sections -----------------------------------------------------
    Case("checks-factcheck-unknown-key",
         lambda ws, t: ["run", "--config", str(run_config(t, ws, factcheck={"statment_template": "{query} {target}."}))],
         ("run config: field 'factcheck.statment_template'", "Extra inputs are not permitted"), inject=no_model_load),
    Case("checks-study-factcheck-unknown-key",
         lambda ws, t: ["study", str(study_file(t, ws, {"factcheck": {"sufix": "."}})), "--out", str(t / "out")],
         ("runs[0]", "field 'factcheck.sufix'", "Extra inputs are not permitted"), inject=no_model_load),
    Case("checks-study-ray-unknown-key",
         lambda ws, t: ["study", str(study_file(t, ws, {"ray": {"num_cpu": 1}})), "--out", str(t / "out")],
         ("runs[0].ray: field 'num_cpu'", "Extra inputs are not permitted"), inject=no_model_load),
]


@parametrize(CASES)
def test_checked_before_work(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def test_kl_prompt_error_does_not_advertise_resume(ws, tmp_path, monkeypatch):
    no_model_load(monkeypatch)
    result = invoke(run_args(ws, tmp_path / "out", "--set", "kl_prompt=is a"))
    assert result.exit_code == 2 and "--resume" not in result.stderr, result.output
    assert not (tmp_path / "out").exists()


def test_resume_is_advertised_only_where_it_can_help(tmp_path):
    from editprobe.editing.settings.hparams import HParamsError
    from editprobe.errors import EditFailedError, OutputError
    from editprobe.models.tokens import TokenizationError
    from editprobe.runs.advice import resume_advice

    out = tmp_path / "run"
    assert "--resume continues it" in resume_advice(OutputError("disk full"), out)
    for exc in (HParamsError("kl_prompt"), TokenizationError("request 3"), EditFailedError("NaN")):
        advice = resume_advice(exc, out)
        assert "continues it" not in advice and "would" in advice, advice


# --- skip mode and the warnings a run prints before the model loads ---------------------------------


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def test_skip_mode_leaves_an_over_long_record_out_and_counts_it(ws, tmp_path, monkeypatch):
    stop_at_model_load(monkeypatch)
    data = long_data(tmp_path, 1)
    result = invoke(edit_args(ws, tmp_path / "out", "--n", "3", "--on-bad-record", "skip", data=data))
    assert result.exit_code == 2 and "stopped where the model loads" in result.stderr, result.output
    [line] = [w for w in warnings_of(result) if "left out" in w]
    assert line.startswith(f"warning: {data}: 1 record left out (--on-bad-record skip): 1 over max_prompt_tokens 256 "
                           "(the model's context length) (first: record 1, field 'prompt': the prompt with its "
                           "subject and target has "), line


def test_skip_mode_fills_n_with_the_records_after_the_dropped_ones(ws, tmp_path):
    from editprobe.runs.lengths import PromptLengths
    from editprobe.runs.preflight import check_datasets

    records = fact_records()
    long_record(0)(records)
    long_record(2)(records)
    records[3]["requested_rewrite"].pop("subject")  # malformed
    data = data_file(tmp_path, records)
    kept, warnings = check_datasets([str(data)], 2, PromptLengths(str(ws["model"])), on_bad_record="skip")
    assert [r.id for r in kept[str(data)]] == ["1", "4"]
    [line] = [w for w in warnings if "left out" in w]
    assert "3 records left out" in line and "1 malformed (first: record 3, field 'requested_rewrite.subject'" in line
    assert "2 over max_prompt_tokens 256" in line and "(first: record 0," in line


def test_an_uncached_hub_model_skips_the_check_with_a_warning():
    from editprobe.runs.lengths import PromptLengths

    lengths = PromptLengths("someone/not-a-cached-model")
    [line] = lengths.setup()
    assert line == ("prompt lengths are not checked against someone/not-a-cached-model's context: "
                    "someone/not-a-cached-model is not in the local Hugging Face cache yet")
    assert not lengths.active


def test_every_query_of_a_record_is_counted(ws):
    from editprobe.data import load_records
    from editprobe.probes.factcheck import FactCheckConfig
    from editprobe.runs.lengths import PromptLengths

    record = load_records("counterfact-sample", limit=1).records[0]
    lengths = PromptLengths(str(ws["model"]), factcheck=FactCheckConfig(), negated=lambda t, rid: t + " not")
    forms = [form for form, _ in lengths.queries(record)]
    assert forms[0] == "prompt" and forms[-2:] == ["negated prompt", "fact-check question"]
    assert sum(f.startswith("paraphrase_prompts[") for f in forms) == len(record.paraphrase_prompts)
    assert sum(f.startswith("neighborhood[") for f in forms) == len(record.neighborhood)


# --- fields a dataset format does not read ----------------------------------------------------------

# The layout of a research group's files (records shaped like this are detected as EasyEdit flat);
# hand-written here.
PAPER_LAYOUT = [
    {"case_id": 0, "prompt": "The mother tongue of {} is", "subject": "Alice", "target_new": "English",
     "target_true": "Italian", "paraphrase_prompts": ["Alice grew up speaking"],
     "neighborhood_prompts": ["The mother tongue of Bob is"], "negetive_prompt": "The mother tongue of {} is not",
     "efficacy_evaluation": {"target": "English"}, "cloze": "Alice speaks", "question": "What does Alice speak?"},
    {"case_id": 1, "prompt": "The birthplace of {} is", "subject": "Carol", "target_new": "Rome",
     "target_true": "Paris", "paraphrase_prompts": [], "neighborhood_prompts": []},
    {"case_id": 2, "prompt": "The birthplace of {} is", "subject": "Dave", "target_new": "Oslo"},
]
IGNORED = ("neighborhood_prompts, paraphrase_prompts, target_true, cloze, efficacy_evaluation, negetive_prompt, "
           "question (ignored)")


def test_fields_a_format_does_not_read_are_one_warning(ws, tmp_path, monkeypatch):
    stop_at_model_load(monkeypatch)
    data = write(tmp_path / "paper.json", json.dumps(PAPER_LAYOUT))
    result = invoke(edit_args(ws, tmp_path / "out", "--n", "3", data=data))
    assert result.exit_code == 2 and "stopped where the model loads" in result.stderr, result.output
    ignored = [w for w in warnings_of(result) if "does not read" in w]
    assert ignored == [f"warning: {data}: 2 of 3 records have fields the easyedit format does not read: {IGNORED}"]


def test_data_inspect_lists_the_fields_not_read_under_its_problems(tmp_path):
    data = write(tmp_path / "paper.json", json.dumps(PAPER_LAYOUT))
    result = invoke(["data", "inspect", str(data)])
    assert result.exit_code == 0, result.output
    assert "problems: none" not in result.stdout
    assert (f"problems: fields not read: {data}: 2 of 3 records have fields the easyedit format does not read: "
            f"{IGNORED}") in result.stdout


def test_the_built_in_datasets_have_no_field_their_format_ignores():
    from editprobe.data import BUILTIN_DATASETS, load_records

    for name in BUILTIN_DATASETS:
        assert load_records(name).unread_warning() is None, name


def test_a_plug_in_format_that_reads_the_raw_mapping_itself_gets_no_warning():
    from editprobe.data.fields import RawEntry

    entry = RawEntry({"a": 1, "b": 2})
    entry.get("a")
    assert entry.unread() == ["b"]
    _ = entry.data  # whatever it does with it, editprobe cannot tell
    assert entry.unread() == []


# --- every nested config model forbids unknown keys -------------------------------------------------


def _config_models():
    from pydantic import BaseModel

    from editprobe.editing.settings.profiles import Profile
    from editprobe.editing.registry import METHODS
    from editprobe.editing.rledit.hypernet import RLEditSettings
    from editprobe.probes.factcheck import FactCheckConfig
    from editprobe.runs.config import RunConfig
    from editprobe.jobs.edit import EditConfig
    from editprobe.studies.study import Study
    from editprobe.studies.backends.ray import RaySettings
    from editprobe.jobs.train_rledit import TrainConfig
    from editprobe.jobs.tune.space import TuneConfig

    roots = [RunConfig, EditConfig, TuneConfig, TrainConfig, Study, RaySettings, Profile, RLEditSettings,
             FactCheckConfig, *(cls.hparams_cls for cls in METHODS.values())]
    seen: dict[type, None] = {}

    def walk(model: type) -> None:
        if model in seen:
            return
        seen[model] = None
        for info in model.model_fields.values():
            for arg in _types_in(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    for root in roots:
        walk(root)
    return list(seen)


def _types_in(annotation):
    import typing

    yield annotation
    for arg in typing.get_args(annotation):
        yield from _types_in(arg)


def test_every_config_model_forbids_unknown_keys():
    # StudyEntry's unknown keys are RunConfig fields of its runs (RunConfig forbids the others).
    from editprobe.studies.study import StudyEntry

    lax = [m.__name__ for m in _config_models() if m is not StudyEntry and m.model_config.get("extra") != "forbid"]
    assert lax == []


# --- --address: a Ray head, probed for real ----------------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_port():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_an_http_server_as_address_is_refused_in_one_line_within_seconds(ws, tmp_path, http_port):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'editprobe[ray]')")
    study = study_file(tmp_path, ws, {})
    started = time.monotonic()
    result = invoke(["study", study, "--out", tmp_path / "s", "--backend", "ray", "--address", f"127.0.0.1:{http_port}"])
    assert time.monotonic() - started < 5
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"error: --address 127.0.0.1:{http_port}: not a Ray head: the service there does not "
                             "speak gRPC (it answered '<!DOCTYPE HTML>'); give the port of the Ray head's GCS "
                             "(ray start --head --port=..., 6379 by default)\n")
    assert result.stdout == "" and not (tmp_path / "s").exists()


def test_ray_core_log_lines_go_to_a_file_not_the_terminal(tmp_path, capfd):
    import os
    import sys

    from editprobe.studies.backends.ray_address import native_stderr_to

    log = tmp_path / "ray.log"
    with native_stderr_to(log):
        os.write(2, b"[W gcs_client.cc:210] Failed to get cluster ID\n")  # as Ray's C++ core writes
        print("warning: ours", file=sys.stderr)
    captured = capfd.readouterr()
    assert "gcs_client" not in captured.err and "warning: ours" in captured.err
    assert "gcs_client" in log.read_text()


def test_a_study_whose_runs_fail_for_their_settings_does_not_advertise_resume(ws, tmp_path, monkeypatch):
    no_model_load(monkeypatch)
    study = study_file(tmp_path, ws, {"set": {"template_groups": [[0, 0]]}})
    result = invoke(["study", study, "--out", tmp_path / "s"])
    assert result.exit_code == 2, result.output
    [line] = result.error_lines
    assert "1 of 1 runs failed" in line and "--resume retries" not in line, line
    assert line.endswith("--status shows why (their settings or data caused it: --resume would fail the same way)")
    status = invoke(["study", tmp_path / "s", "--status"])
    assert "template_groups" in status.stdout and "group 0 is [0, 0]" in status.stdout


@pytest.mark.parametrize("template,message", [
    ("{} is a", None),
    ("{{literal}} {} is a", None),
    ("is a", "must contain exactly one '{}' (where the subject goes), it has 0"),
    ("{} and {}", "it has 2"),
    ("{0} is a", "may hold only '{}' (where the subject goes), not {0}"),
    ("{subject} is a", "not {subject}"),
    ("{!r} is a", "{!r} has a conversion or format spec"),
    ("{:>9} is a", "{:>9} has a conversion or format spec"),
    ("{} is a }", "Single '}' encountered"),
    ("{} is a {", "Single '{' encountered"),
])
def test_a_subject_template_holds_exactly_one_bare_slot(template, message):
    from editprobe.data.placeholders import one_subject_slot

    if message is None:
        assert one_subject_slot(template) == template
    else:
        with pytest.raises(ValueError, match=re.escape(message)):
            one_subject_slot(template)


def test_the_fact_check_wording_uses_only_its_placeholders():
    from pydantic import ValidationError

    from editprobe.probes.factcheck import FactCheckConfig

    FactCheckConfig(statement_template="{query} {target}.", suffix=" Answer {True} or {False}.")  # suffix: not formatted
    for fields, message in (({"statement_template": "{query} {target} {}"}, "uses {}"),
                            ({"statement_template": "{query}"}, "must contain {target}"),
                            ({"instruction": "Judge: {statement} {statment}"}, "uses {statment}"),
                            ({"question_statement_template": "{question} {target:>3}"}, "format spec")):
        with pytest.raises(ValidationError, match=re.escape(message)):
            FactCheckConfig(**fields)
