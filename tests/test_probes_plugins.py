"""A probe defined outside the package (here) registers and runs inside a run, end to end:
named in the run config as module:attribute, or registered through the Python API."""

from __future__ import annotations

import pytest
from cli_helpers import invoke
from test_runs_helpers import config

from editprobe.probes import PROBES, Metric, Probe, ProbeContext, register_probe
from editprobe.probes.scoring import teacher_forced
from editprobe.registry import RegistryError
from editprobe.report import classic_table, load_summaries
from editprobe.runs import read_samples, run_experiment
from editprobe.runs.summary import parse_summary


class TargetNLLProbe(Probe):
    """A user's metric: the mean NLL of o* after the edit prompt (lower after a good edit)."""

    name = "target-nll"
    description = "mean token NLL of o* after the edit prompt"

    def measure(self, ctx: ProbeContext, stage, baseline):
        scores = teacher_forced(ctx.model, ctx.tokenizer, [(r.query, r.target_new) for r in ctx.records])
        return {"ids": [r.id for r in ctx.records], "nll": [s.mean_nll for s in scores]}

    def _metric(self, state):
        return Metric(value=round(sum(state["nll"]) / len(state["nll"]), 3), n=len(state["nll"]), unit="nats",
                      label="mean token NLL of o* after the edit prompt (a test's own probe)", higher_is_better=False)

    def no_edit(self, ctx, baseline):
        return self.outcome({"nll": self._metric(baseline)}), []

    def combine(self, ctx, states, others):
        rows = [{"edited_with": "positive", "record_id": i, "setting": "target-nll", "probe": self.name,
                 "query": "", "expected": "", "match": n < b, "nll": n}
                for i, n, b in zip(states["positive"]["ids"], states["positive"]["nll"], states["baseline"]["nll"])]
        return self.outcome({"nll": self._metric(states["positive"])}), rows


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


def test_a_probe_named_as_module_attribute_runs_inside_a_run(ws):
    out = ws["root"] / "run"
    try:
        summary = parse_summary(run_experiment(config(ws, out, probes=("negation", "test_probes_plugins:TargetNLLProbe"),
                                                      n=3), progress=False))
        assert "target-nll" in PROBES  # imported and registered on first use
        data = summary.datasets["cf"]
        assert data.probes == ["negation", "target-nll"]
        (result,) = summary.results
        before, after = data.no_edit["target-nll"].value("nll"), result.value("target-nll", "nll")
        assert after < before  # the edit made o* likelier
        assert set(summary.results[0].edit_reports) == {"positive", "negative"}  # negation needs both runs
        rows = [s for s in read_samples(out) if s["setting"] == "target-nll"]
        assert len(rows) == 3 and all(r["method"] == "memit" and "generated" in r for r in rows)
        table, legend = classic_table(load_summaries([out]))
        assert list(table.columns) == ["Model", "Dataset", "Method", "target-nll nll"]
        assert "a test's own probe" in legend["target-nll nll"]
        report = invoke(["report", str(out), "--out", str(ws["root"] / "tables")])
        assert report.exit_code == 0 and "| target-nll nll |" in report.stdout
    finally:
        PROBES.unregister("target-nll")


def test_a_probe_registered_through_the_api_and_only_the_positive_run(ws):
    out = ws["root"] / "api"

    class Renamed(TargetNLLProbe):
        name = "target-nll-api"

    try:
        register_probe(Renamed)
        register_probe(Renamed)  # again: a no-op
        with pytest.raises(RegistryError, match="probe 'target-nll-api' is already registered"):
            register_probe(type("Other", (TargetNLLProbe,), {"name": "target-nll-api"}))
        summary = parse_summary(run_experiment(config(ws, out, probes=("target-nll-api",), n=3), progress=False))
        (result,) = summary.results
        assert list(result.probes) == ["target-nll-api"]
        # No probe needs the negated requests, so that editing run is not made.
        assert set(result.edit_reports) == {"positive"}
    finally:
        PROBES.unregister("target-nll-api")


@pytest.mark.parametrize("spec,message", [
    ("no-such-probe", "unknown probe 'no-such-probe'; registered: "),
    ("no_such_module:Probe", "cannot import 'no_such_module'"),
    ("test_probes_plugins:nothing", "has no attribute 'nothing'"),
    ("test_probes_plugins:ws", "is not a Probe"),
])
def test_a_bad_probe_in_the_config_is_one_line_before_any_work(ws, spec, message):
    out = ws["root"] / "bad"
    result = invoke(["run", "--model", str(ws["model"]), "--data", str(ws["data"]), "--out", str(out),
                     "--hparams", "tiny", "--config", str(_config_file(ws, spec))])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not out.exists()


def _config_file(ws, spec: str):
    path = ws["root"] / "probes.yaml"
    path.write_text(f"probes: [negation, '{spec}']\n")
    return path


def test_classic_probes_in_a_run_see_the_baseline(ws):
    """The neighborhood EM after an edit compares with the unedited model's continuations,
    which only the baseline stage measured: the run must hand them over (and a resumed run
    must read them back)."""
    import json

    from test_runs_helpers import counterfact_records

    records = counterfact_records(3)
    for r in records:
        r["neighborhood_prompts"] = [f"The birthplace of {s}" for s in ("Erin", "Frank")]
        r["paraphrase_prompts"] = [r["requested_rewrite"]["prompt"].format(r["requested_rewrite"]["subject"])]
    data = ws["root"] / "cf_neighbors.json"
    data.write_text(json.dumps(records))
    out = ws["root"] / "classic"
    summary = parse_summary(run_experiment(config(ws, out, datasets=(str(data),), n=3,
                                                  probes=("efficacy", "paraphrase", "neighborhood")), progress=False))
    d = summary.datasets["cf_neighbors"]
    assert d.no_edit["neighborhood"].value("EM") == 100.0
    (result,) = summary.results
    assert set(result.probes["neighborhood"].metrics) == {"prob", "magnitude", "EM"}
    assert result.value("efficacy", "prob") > d.no_edit["efficacy"].value("prob")
    assert result.value("paraphrase", "EM") == result.value("efficacy", "EM")  # the same prompt here
    assert set(summary.timings["probes"]) == {"cf_neighbors__baseline", "cf_neighbors__memit__positive"}
