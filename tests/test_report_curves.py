"""The curve over edits in the report (docs/curves.md): curves.csv, the PNG/SVG figures, the
HTML section; nothing of it for runs without a curve."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
from cli_helpers import invoke

from editprobe.report import load_summaries, write_tables
from editprobe.report.curves import CURVE_COLUMNS, curve_table
from editprobe.report.html import build_html, classify_dirs

METHODS = ("memit", "alphaedit")
EDITS_PER_BATCH = 10
EM = "teacher-forced exact match: o* after the query"


def _metric(value, lo=None, hi=None, n=None, unit="%", label=EM) -> dict:
    return {"value": value, "lo": lo, "hi": hi, "n": n, "label": label, "unit": unit}


def _outcome(probe: str, metrics: dict) -> dict:
    return {"probe": probe, "version": 1, "table": probe, "metrics": metrics}


def _point(method_shift: float, stage: str, part: str, batches: int) -> dict:
    """A point whose values encode where it is: 90 − 10·batches (− the method's shift)."""
    edits = EDITS_PER_BATCH * batches
    value = 90.0 - 10 * batches - method_shift
    if part == "edited":
        hit, leak = ("PP", "PN") if stage == "positive" else ("NN", "NP")
        probes = {"negation": _outcome("negation", {hit: _metric(value, value - 5, value + 4, edits),
                                                    leak: _metric(100 - value, 95 - value, 104 - value, edits)}),
                  "efficacy": _outcome("efficacy", {"prob": _metric(value + 1, value - 3, value + 3, edits)})}
        n_records = edits
    else:
        probes = {"neighborhood": _outcome("neighborhood", {"prob": _metric(value, value - 6, value + 6, 50)}),
                  "perplexity": _outcome("perplexity", {"ppl": _metric(20.0 + batches, n=4000, unit="ppl",
                                                                      label="perplexity: corpus-level")})}
        n_records = 50
    return {"stage": stage, "batches": batches, "edits": edits, "part": part, "n_records": n_records,
            "probes": probes}


def _curve(method_shift: float) -> list[dict]:
    return [_point(method_shift, stage, part, b) for stage in ("positive", "negative") for b in (1, 2)
            for part in ("edited", "heldout")]


def _summary(curves: bool = True, schema: int = 2) -> dict:
    final = {"negation": _outcome("negation", {"PP": _metric(70.0, 60.0, 78.0, 20)})}
    results = [{"dataset": "mcf", "method": m, "preserve_previous": True, "probes": final,
                **({"curve": _curve(5.0 * i)} if curves else {})} for i, m in enumerate(METHODS)]
    return {"schema_version": schema, "config": {"model": "tiny"},
            "datasets": {"mcf": {"n_records": 20, "no_edit": final}}, "results": results}


def _run(tmp_path, name: str, summary: dict):
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    return d


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("curves")
    out = root / "rep"
    text = write_tables(load_summaries([_run(root, "a", _summary())]), out)
    return {"out": out, "text": text, "root": root}


def test_curve_table_rows_columns_and_values():
    df = curve_table([_parsed()])
    assert tuple(df.columns) == CURVE_COLUMNS
    # 2 methods × 2 stages × 2 batches × (edited: 3 metrics + held-out: 2 metrics)
    assert len(df) == 2 * 2 * 2 * (3 + 2)
    row = df[(df["Method"] == "alphaedit") & (df["stage"] == "negative") & (df["batches"] == 2)
             & (df["probe"] == "negation") & (df["metric"] == "NN")].iloc[0]
    assert (row["Model"], row["Dataset"], row["part"], row["edits"], row["records"]) == ("tiny", "mcf", "edited", 20, 20)
    assert (row["value"], row["lo"], row["hi"], row["n"], row["unit"]) == (65.0, 60.0, 69.0, 20, "%")
    ppl = df[(df["probe"] == "perplexity") & (df["Method"] == "memit")]
    assert ppl["lo"].isna().all() and list(ppl["value"]) == [21.0, 22.0, 21.0, 22.0] and set(ppl["unit"]) == {"ppl"}


def _parsed():
    from editprobe.runs.summary import parse_summary

    return parse_summary(_summary())


def test_curves_csv_and_figures_are_written(written):
    out = written["out"]
    csv = pd.read_csv(out / "curves.csv")
    assert tuple(csv.columns) == CURVE_COLUMNS and len(csv) == 40
    first = csv.iloc[0]
    assert (first["Method"], first["stage"], first["batches"], first["probe"], first["metric"],
            first["value"], first["lo"], first["hi"], first["n"]) == ("memit", "positive", 1, "negation", "PP",
                                                                     80.0, 75.0, 84.0, 10)
    names = sorted(p.name for p in (out / "curves").iterdir())
    stems = [f"mcf-{stage}-{part}" for stage in ("negative", "positive") for part in ("edited", "heldout")]
    assert names == sorted(f"{s}.{ext}" for s in stems for ext in ("png", "svg"))
    assert all((out / "curves" / n).stat().st_size > 1000 for n in names)
    svg = (out / "curves" / "mcf-positive-edited.svg").read_text(encoding="utf-8")
    for method in METHODS:  # one line and one band per method in each of the 3 panels (PP, PN, efficacy prob)
        assert len(re.findall(rf'id="curve-{method}-\d"', svg)) == 3
        assert len(re.findall(rf'id="band-{method}-\d"', svg)) == 3
    assert "### Curves over edits" in written["text"] and "curves/mcf-positive-edited.png" in written["text"]


def test_figures_are_deterministic(written, tmp_path):
    again = tmp_path / "rep2"
    write_tables(load_summaries([_run(tmp_path, "a", _summary())]), again)
    for name in ("curves.csv", "curves/mcf-negative-heldout.png", "curves/mcf-negative-heldout.svg"):
        assert (again / name).read_bytes() == (written["out"] / name).read_bytes(), name


def test_html_has_the_section_with_the_figures(written):
    run = written["root"] / "a"
    html = build_html(classify_dirs([run]), load_summaries([run]))
    section = html.split('<section id="curves">', 1)[1].split("</section>", 1)[0]
    assert "<h2>Curves over edits</h2>" in section and section.count('src="data:image/png;base64,') == 4
    assert 'href="#curves"' in html and "95% interval" in section


@pytest.mark.parametrize("schema", [1, 2])
def test_runs_without_a_curve_write_none_of_it(tmp_path, schema):
    run = _run(tmp_path, "a", _summary(curves=False, schema=schema))
    summaries = load_summaries([run])
    assert curve_table(summaries) is None
    out = tmp_path / "rep"
    text = write_tables(summaries, out)
    assert "Curves" not in text and not (out / "curves.csv").exists() and not (out / "curves").exists()
    assert "curves" not in json.loads((out / ".editprobe.json").read_text())["owned"]
    html = build_html(classify_dirs([run]), summaries)
    assert 'id="curves"' not in html and "Curves over edits" not in html


def test_a_later_report_without_curves_removes_the_earlier_ones(tmp_path):
    out = tmp_path / "rep"
    write_tables(load_summaries([_run(tmp_path, "a", _summary())]), out)
    assert (out / "curves.csv").exists()
    write_tables(load_summaries([_run(tmp_path, "b", _summary(curves=False))]), out)
    assert not (out / "curves.csv").exists() and not (out / "curves").exists()


def test_report_cli_lists_the_curves(tmp_path):
    result = invoke(["report", str(_run(tmp_path, "a", _summary())), "--out", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    assert "### Curves over edits" in result.output and (tmp_path / "rep" / "curves" / "mcf-positive-edited.svg").exists()


def test_panels_put_differences_last_and_are_capped():
    from editprobe.report.curves import MAX_PANELS, _panels, curve_figures

    summary = _summary()
    metrics = {k: _metric(50.0, 45.0, 55.0, 10, unit="points" if "-" in k else "%")
               for k in ("PP-PN", "Avg", "PP", "PN", "PN|PP", "NN", "NP", "NP|NN")}
    metrics["Avg"] = _metric(None, unit="points")  # no value: no panel
    for i, result in enumerate(summary["results"]):
        result["preserve_previous"] = bool(i)  # the runs differ in K_p: rows say which
        for point in result["curve"]:
            point["probes"] = {"negation": _outcome("negation", metrics)}
            point["n_records"] += i  # different n per method: the legend says each
    from editprobe.runs.summary import parse_summary

    df = curve_table([parse_summary(summary)])
    assert set(df["Method"]) == {"memit (no K_p)", "alphaedit (with K_p)"}
    rows = df[(df["stage"] == "positive") & (df["part"] == "edited")]
    assert _panels(rows)[:MAX_PANELS] == [("negation", k) for k in ("PP", "PN", "PN|PP", "NN", "NP", "NP|NN")]
    assert _panels(rows)[-1] == ("negation", "PP-PN")
    figures = curve_figures(rows, ("svg",))
    assert [f.name for f in figures] == ["mcf-positive-edited"] and set(figures[0].files) == {"svg"}
