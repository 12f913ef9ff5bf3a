"""The whole experiment end to end on a trained tiny model: baseline, positive and negated
editing runs, fact-checking, per-sample records, summary, and the refusal rules."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest
import torch
from test_runs_helpers import config, workspace
from cli_helpers import invoke

from editprobe.models import load_model
from editprobe.runs import RunDir, RunExistsError, read_samples, read_summary, run_experiment

SAMPLE_FIELDS = {"query", "expected", "generated", "match", "setting", "record_id", "method", "dataset"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    ws = workspace(root)
    out = root / "out"
    loaded = load_model(str(ws["model"]))
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        summary = run_experiment(config(ws, out, methods=("memit", "alphaedit")), loaded=loaded, progress=False)
    after = loaded.model.state_dict()
    restored = all(torch.equal(after[k], v) for k, v in weights.items())
    return {"ws": ws, "out": out, "summary": summary, "root": root, "restored": restored}


def test_summary_has_config_versions_and_metrics(finished):
    s = read_summary(finished["out"])
    assert s == json.loads(json.dumps(finished["summary"]))
    assert s["config"]["methods"] == ["memit", "alphaedit"] and s["seed"] == 0
    assert {"python", "torch", "transformers", "editprobe"} <= set(s["versions"])
    assert [r["method"] for r in s["results"]] == ["memit", "alphaedit"]
    assert set(s["timings"]["batches"]) == {f"cf__{m}__{k}" for m in ("memit", "alphaedit")
                                            for k in ("positive", "negative")}
    assert all(len(b) == 2 for b in s["timings"]["batches"].values())  # 6 records, batches of 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s["timings"]["finished"])  # the report's run date
    d = s["datasets"]["cf"]
    assert d["n_records"] == 6 and d["negation_rules"] == {"user-table": 6}
    assert s["schema_version"] == 2 and d["probes"] == ["negation", "factcheck", "efficacy", "perplexity",
                                                   "two-choice", "grounded"]
    neg = d["no_edit"]["negation"]
    assert neg["details"]["available"] and neg["metrics"]["PP"]["value"] == 100.0  # the model knows its facts
    assert neg["metrics"]["Avg"]["value"] == neg["metrics"]["PP-PN"]["value"]  # the only discrepancy there
    fc = d["no_edit"]["factcheck"]["metrics"]
    assert fc["Eff"]["value"] == 100.0 and fc["Acc"]["n"] == neg["details"]["n_known"]  # restricted as negation's
    for r in s["results"]:
        metrics = r["probes"]["negation"]["metrics"]
        assert metrics["PP"]["value"] >= 50.0  # the edits took
        assert r["probes"]["factcheck"]["metrics"]["Eff"]["value"] == metrics["PP"]["value"]
        assert "exact-match" in metrics["PN"]["label"]
        assert len(r["edit_reports"]["positive"]) == 2


def test_every_table_shows_the_intervals(finished, tmp_path):
    """md, tex, HTML: "value [lo, hi]"; CSV: value, lo, hi, n columns; the bootstrap's seed and
    resamples in the summary and the settings table (docs/statistics.md)."""
    import pandas as pd

    from editprobe.probes.intervals import settings

    s = read_summary(finished["out"])
    assert s["intervals"] == settings()
    pp = s["results"][0]["probes"]["negation"]["metrics"]["PP"]
    avg = s["results"][0]["probes"]["negation"]["metrics"]["Avg"]
    assert pp["lo"] <= pp["value"] <= pp["hi"] and avg["lo"] <= avg["value"] <= avg["hi"]
    result = invoke(["report", str(finished["out"]), "--out", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    shown = f"{pp['value']:.1f} [{pp['lo']:.1f}, {pp['hi']:.1f}]"
    assert f"| memit | {shown} |" in (tmp_path / "tables" / "negation.md").read_text()
    assert f"memit & {shown} &" in (tmp_path / "tables" / "negation.tex").read_text()
    csv = pd.read_csv(tmp_path / "tables" / "negation.csv")
    row = csv[csv["Method"] == "memit"].iloc[0]
    assert (row["PP"], row["PP lo"], row["PP hi"], row["PP n"]) == (pp["value"], pp["lo"], pp["hi"], 6)
    assert "seed 0, 2000 resamples" in (tmp_path / "tables" / "settings.md").read_text()
    classic = (tmp_path / "tables" / "classic.md").read_text()
    assert "[–]" in classic and "perplexity ppl" in classic  # perplexity is corpus-level: no interval


def test_metrics_agree_with_the_per_sample_records(finished):
    samples = read_samples(finished["out"])
    assert all(SAMPLE_FIELDS <= set(x) for x in samples)
    for r in finished["summary"]["results"]:
        mine = [x for x in samples if x["method"] == r["method"]]
        by_setting = Counter(x["setting"] for x in mine)
        assert {k: by_setting[k] for k in ("PP", "PN", "NN", "NP")} == {"PP": 6, "PN": 6, "NN": 6, "NP": 6}
        for setting in ("PP", "PN", "NN", "NP"):
            rows = [x for x in mine if x["setting"] == setting]
            negation = r["probes"]["negation"]
            assert negation["details"]["counts"][setting] == [sum(x["match"] for x in rows), 6]
            assert negation["metrics"][setting]["value"] == round(100 * sum(x["match"] for x in rows) / 6, 1)
        # PP/PN come from the positively edited model, NN/NP from the negatively edited one.
        assert {x["edited_with"] for x in mine if x["setting"] in ("PP", "PN")} == {"positive"}
        assert {x["edited_with"] for x in mine if x["setting"] in ("NN", "NP")} == {"negative"}
        assert by_setting["factcheck-after"] == 6 and by_setting["factcheck-control"] == 6
    assert Counter(x["setting"] for x in samples if x["method"] == "none")["factcheck-before"] == 6


def test_model_is_restored_after_every_editing_run(finished):
    """Four editing runs went through the same model object: each started from, and left,
    the unedited weights."""
    assert finished["restored"]


def test_checkpoints_are_removed_when_finished(finished):
    assert not (finished["out"] / "checkpoints").exists()
    assert (finished["out"] / "samples.jsonl").is_file()


def test_finished_run_is_refused(finished):
    with pytest.raises(RunExistsError, match="finished run"):
        run_experiment(config(finished["ws"], finished["out"], methods=("memit", "alphaedit")), resume=True)


def test_unfinished_run_needs_resume_and_the_same_config(tmp_path):
    ws = {"model": tmp_path, "data": tmp_path / "d.json", "corpus": tmp_path / "c", "negations": tmp_path / "n"}
    run_dir = RunDir(tmp_path / "run")
    run_dir.open(config(ws, tmp_path / "run"), resume=False)
    run_dir.open(config(ws, tmp_path / "run"), resume=False)  # a config but no work yet: no obstacle
    (run_dir.root / "stages").mkdir()
    (run_dir.root / "stages" / "cf__baseline.json").write_text("{}")
    with pytest.raises(RunExistsError, match="--resume"):
        run_dir.open(config(ws, tmp_path / "run"), resume=False)
    with pytest.raises(RunExistsError, match="differs in seed"):
        run_dir.open(config(ws, tmp_path / "run", seed=1), resume=True)
    run_dir.open(config(ws, tmp_path / "run"), resume=True)  # same config: fine
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunExistsError, match="not a run directory"):
        RunDir(other).open(config(ws, other), resume=False)


def test_report_command_on_the_run(finished, tmp_path):
    result = invoke(["report", str(finished["out"]), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "| No edit |" in result.output and "| memit |" in result.output
    for name in ("negation", "factcheck"):
        for ext in ("md", "csv", "tex"):
            assert (tmp_path / "rep" / f"{name}.{ext}").is_file()
    assert not (tmp_path / "rep" / "ablation.md").exists()  # the run has one preserve setting


def test_run_command_rejects_a_bad_config_before_loading(tmp_path):
    result = invoke(["run", "--method", "nope", "--out", str(tmp_path / "o"), "--n", "1"])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output
    assert not (tmp_path / "o").exists()
    result = invoke(["run", "--n", "0", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "'n'" in result.output


def test_cli_resume_reads_the_saved_config_and_yaml_configs_work(finished, tmp_path):
    """`run --resume --out DIR` takes the run's own config; a YAML config with --out works
    the same; both stop at the finished run without touching it."""
    before = (finished["out"] / "summary.json").read_bytes()
    result = invoke(["run", "--resume", "--out", str(finished["out"])])
    assert result.exit_code == 2 and "finished run" in " ".join(result.output.split())
    cfg = config(finished["ws"], finished["out"], methods=("memit", "alphaedit"))
    path = tmp_path / "run.yaml"
    path.write_text(json.dumps(cfg.model_dump(mode="json")))  # JSON is YAML
    result = invoke(["run", "--config", str(path)])
    assert result.exit_code == 2 and "finished run" in " ".join(result.output.split())
    assert (finished["out"] / "summary.json").read_bytes() == before


def test_summary_records_the_model_dtype_and_the_c0_documents(finished):
    s = finished["summary"]
    assert s["model_dtype"] == "float32"
    for r in s["results"]:
        c0 = r["c0"]
        assert c0["asked"] == 200 and set(c0["documents"]) == {"1", "2"}  # the tiny hparams' layers
        assert all(n == 100 for n in c0["documents"].values())  # the corpus has 100: fewer than asked


def test_the_run_line_shows_each_negation_figure_with_its_interval(finished):
    from editprobe.cli.run import result_line
    from editprobe.probes.intervals import shown
    from editprobe.report import load_summaries

    row = load_summaries([finished["out"]])[0].results[0]
    neg = row.probes["negation"].metrics

    def cell(key):
        return f"{key} {shown(neg[key].value, neg[key].lo, neg[key].hi, '{}')}"

    line = result_line(row)
    assert line.startswith(f"{row.dataset} memit: " + " ".join(cell(k) for k in ("PP", "PN", "NN", "NP", "Avg")))
    assert f" {cell('PN|PP')} (n={neg['PN|PP'].n}) {cell('NP|NN')} (n={neg['NP|NN'].n}) | fact-check Eff" in line
    assert "[" in cell("PN|PP")


def test_fact_check_eff_over_records_the_negation_settings_leave_out_has_its_interval(tmp_path):
    """A negation table without the birthplace template leaves those records out of the negation
    settings (no rule negates "The birthplace of {}"); they are still edited, so the fact-check
    measures Eff itself over every edited record, with its own n and Wilson interval."""
    from editprobe.probes.intervals import wilson

    ws = workspace(tmp_path)
    partial = tmp_path / "mother-tongue-only.yaml"
    partial.write_text('"The mother tongue of {}": "Not the mother tongue of {}"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
        summary = run_experiment(config(ws, tmp_path / "out", negation_table=str(partial),
                                        probes=("negation", "factcheck")), progress=False)
    d = summary["datasets"]["cf"]
    assert d["n_excluded"] > 0 and d["n_records"] + d["n_excluded"] == 6
    eff = summary["results"][0]["probes"]["factcheck"]["metrics"]["Eff"]
    hits = round(eff["value"] * 6 / 100)
    assert eff["n"] == 6 and (eff["lo"], eff["hi"]) == wilson(hits, 6)
