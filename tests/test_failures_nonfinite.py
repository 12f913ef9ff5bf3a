"""A metric that is not a number (a model that returned NaN, a perplexity past a float's
range) never reaches a JSON file as Python's non-standard NaN/Infinity: it is written as
null, with one ``warning:`` line per file naming the fields, every file stays valid JSON,
a resumed run reads the nulls back to the same summary, and ``report`` (tables and
``--html``) shows "–" for it. Through the real command line, in-process (failure_harness.py).
"""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
from cli_helpers import invoke
from failure_harness import run_args, ws  # noqa: F401 - ws is a fixture
from test_runs_helpers import comparable

DASH = "–"


def _strict(text: str):
    """A standard JSON parser's reading: NaN, Infinity and -Infinity are errors."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def _nan_on_the_edited_model(mp: pytest.MonkeyPatch) -> None:
    """The perplexity probe's NLL is NaN on the edited model (its 2nd measurement)."""
    import editprobe.probes.builtin.perplexity as perplexity

    original, calls = perplexity.corpus_nll, {"n": 0}

    def corpus_nll(*args, **kwargs):
        total, count = original(*args, **kwargs)
        calls["n"] += 1
        return (math.nan if calls["n"] == 2 else total), count

    mp.setattr(perplexity, "corpus_nll", corpus_nll)


def _row(table, method: str) -> dict[str, str]:
    """The cells of ``method``'s row of a Markdown table, by column."""
    lines = table.read_text().splitlines()
    # a cell may hold an escaped pipe (the column PN\|PP)
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))] for line in lines if line.startswith("|")]
    return dict(zip(cells[0], next(row for row in cells if row[2] == method)))


def _checked_page(page) -> str:
    """The page, whose embedded samples a standard parser reads and whose cells show no nan/inf."""
    html = page.read_text(encoding="utf-8")
    _strict(html.split('id="ep-samples-data">', 1)[1].split("</script>", 1)[0])
    assert not re.search(r">(nan|inf|-inf|NaN|Infinity)<", html)
    return html


@pytest.fixture(scope="module")
def nan_run(ws, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("nonfinite") / "run"
    with pytest.MonkeyPatch.context() as mp:
        _nan_on_the_edited_model(mp)
        result = invoke(run_args(ws, out))
    assert result.exit_code == 0, result.output
    return out, result


def test_a_nan_metric_is_null_with_one_warning_per_file(nan_run):
    out, result = nan_run
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "not finite" in line]
    print("\n".join(warnings))  # the messages, with -s
    assert warnings == [
        f"warning: {out}/stages/cf__memit__positive.json: 1 number not finite (NaN or infinity), written as null: "
        "probes.perplexity.nll",
        f"warning: {out}/summary.json: 2 numbers not finite (NaN or infinity), written as null: "
        "results.0.probes.perplexity.metrics.ppl.value, results.0.probes.perplexity.metrics.change.value",
    ]
    for path in out.rglob("*.json"):
        _strict(path.read_text())
    for line in (out / "samples.jsonl").read_text().splitlines():
        _strict(line)
    summary = _strict((out / "summary.json").read_text())
    metrics = summary["results"][0]["probes"]["perplexity"]["metrics"]
    assert metrics["ppl"]["value"] is None and metrics["change"]["value"] is None
    assert summary["datasets"]["cf"]["no_edit"]["perplexity"]["metrics"]["ppl"]["value"] > 0  # the rest is kept


def test_a_resumed_run_reads_the_nulls_back_to_the_same_summary(nan_run, ws, tmp_path):  # noqa: F811
    out, _ = nan_run
    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("summary.json", "samples.jsonl", ".editprobe.lock"))
    result = invoke(["run", "--out", str(again), "--resume"])
    assert result.exit_code == 0, result.output
    assert comparable(_strict((again / "summary.json").read_text())) == comparable(
        _strict((out / "summary.json").read_text()))


def test_report_shows_a_null_metric_as_a_dash(nan_run, tmp_path):
    out, _ = nan_run
    tables, page = tmp_path / "tables", tmp_path / "page.html"
    result = invoke(["report", str(out), "--out", str(tables), "--html", str(page)])
    assert result.exit_code == 0, result.output
    cells = _row(tables / "classic.md", "memit")
    assert cells["perplexity ppl"] == DASH and cells["perplexity change"] == DASH
    html = _checked_page(page)
    classic = html.split('id="ep-table-classic"', 1)[1].split("</table>", 1)[0]
    assert f"<td>{DASH}</td>" in classic


def test_a_summary_written_with_nan_before_still_reports(nan_run, tmp_path):
    """Runs finished by an older editprobe hold NaN and Infinity literals: still "–"."""
    out, _ = nan_run
    old = tmp_path / "old"
    shutil.copytree(out, old)
    summary = json.loads((old / "summary.json").read_text())
    negation = summary["results"][0]["probes"]["negation"]["metrics"]
    negation["PP"]["value"], negation["PN"]["value"] = math.nan, math.inf
    summary["results"][0]["probes"]["perplexity"]["metrics"]["ppl"]["value"] = math.inf
    (old / "summary.json").write_text(json.dumps(summary))  # Python's json writes NaN, Infinity
    samples = [json.loads(line) for line in (old / "samples.jsonl").read_text().splitlines()]
    samples[0]["generated"] = math.nan
    (old / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    tables, page = tmp_path / "tables", tmp_path / "page.html"
    result = invoke(["report", str(old), "--out", str(tables), "--html", str(page)])
    assert result.exit_code == 0, result.output
    assert "inf" not in (tables / "negation.md").read_text() + (tables / "classic.md").read_text()
    negation = _row(tables / "negation.md", "memit")
    assert (negation["PP"], negation["PN"], _row(tables / "classic.md", "memit")["perplexity ppl"]) == (DASH,) * 3
    _checked_page(page)


def test_finite_names_the_fields_and_counts_the_rest():
    from editprobe.jsontext import NonFiniteWarning, dumps

    obj = {"a": [1.0, math.nan, {"b": math.inf}], "c": -math.inf, "d": "NaN", **{f"e{i}": math.nan for i in range(4)}}
    with pytest.warns(NonFiniteWarning) as caught:
        text = dumps(obj, "x.json")
    assert _strict(text) == {"a": [1.0, None, {"b": None}], "c": None, "d": "NaN", **{f"e{i}": None for i in range(4)}}
    assert len(caught) == 1
    assert str(caught[0].message) == ("x.json: 7 numbers not finite (NaN or infinity), written as null: a.1, a.2.b, "
                                      "c, e0, e1 and 2 more")
