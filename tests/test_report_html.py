"""`editprobe report ... --html`: a self-contained page of tables, charts, trace/analysis
figures and a per-sample browser. Run, trace and analysis directories are fabricated here
(summary.json, samples.jsonl, trace.json, analysis.json, tiny PNGs); the browser tests drive
the page in headless Chromium through selenium and skip where Chromium is not installed."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from browser_helpers import driver  # noqa: F401 - a fixture
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from cli_helpers import invoke

from editprobe.probes.intervals import wilson
from editprobe.report.charts import grouped_bars
from editprobe.report.html import embed_json

SCREENSHOT_COPY = Path("/tmp/editprobe-report-screenshot.png")
DATASETS = ("mcf", "zsre")
METHODS = ("memit", "alphaedit")
N_RECORDS = 40  # 2 runs × 2 datasets × 16 rows per record = 2560 samples: more than the 500 drawn
PAYLOAD = '</script><script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> pwned'
PN_WILSON = wilson(35, 40)  # runA's PN: 87.5 = 35 of 40 records
NEG = {"PP": 98.2, "PN": 69.4, "NN": 97.8, "NP": 81.5, "PP-PN": 28.8, "PP-NP": 16.7, "NN-PN": 28.4, "NN-NP": 16.3,
       "Avg": 22.6}


def _summary(preserve: bool) -> dict:
    return {
        "config": {"model": "tiny"},
        "datasets": {dk: {"no_edit": {"PP": 100.0, "PN": 15.4}, "factcheck_no_edit": {"Acc": 91.1, "n": 90}}
                     for dk in DATASETS},
        "results": [{"dataset": dk, "method": m, "preserve_previous": preserve,
                     "negation": {**NEG, "PP": 98.2 if preserve else 23.2},
                     "factcheck": {"Eff": 98.2 if preserve else 23.2, "Acc": 64.6, "n": 80, "Control": 12.5}}
                    for dk in DATASETS for m in METHODS],
    }


def _metric(value, label="fabricated", unit="%"):
    return {"value": value, "n": 40, "label": label, "unit": unit}


def _outcome(probe: str, table: str, values: dict, unit: str = "%") -> dict:
    return {"probe": probe, "version": 1, "table": table,
            "metrics": {k: _metric(v, f"{probe} {k}: protocol of a fabricated metric", unit) for k, v in values.items()}}


def _summary_v1(preserve: bool) -> dict:
    """The same numbers in schema 1 (probes as plug-ins), plus classic metrics."""
    v0 = _summary(preserve)
    classic_none = {"efficacy": _outcome("efficacy", "classic", {"prob": 12.5, "magnitude": -3.1, "EM": 0.0}),
                    "perplexity": _outcome("perplexity", "classic", {"ppl": 21.37}, "ppl")}
    pn = {"value": 87.5, "n": 40, "lo": PN_WILSON[0], "hi": PN_WILSON[1], "label": "negation PN", "unit": "%"}
    return {
        "schema_version": 1, "config": v0["config"], "versions": {"editprobe": "9.9.9"},
        "timings": {"finished": "2026-01-02T03:04:05Z"},
        "datasets": {dk: {"n_records": N_RECORDS, "no_edit": {
            "negation": _outcome("negation", "negation", {"PP": 100.0, "PN": 15.4, "PP-PN": 84.6, "Avg": 84.6}),
            "factcheck": {**_outcome("factcheck", "factcheck", {"Eff": 100.0, "Acc": 91.1}),
                          "metrics": {"Eff": _metric(100.0), "Acc": {**_metric(91.1), "n": 90}}},
            **classic_none}} for dk in DATASETS},
        "results": [{"dataset": r["dataset"], "method": r["method"], "preserve_previous": preserve, "probes": {
            "negation": {**_outcome("negation", "negation", r["negation"]),
                         "metrics": {**_outcome("negation", "negation", r["negation"])["metrics"], "PN": pn}},
            "factcheck": {**_outcome("factcheck", "factcheck", {}),
                          "metrics": {"Eff": _metric(r["factcheck"]["Eff"]), "Acc": {**_metric(64.6), "n": 80},
                                      "Control": _metric(12.5)}},
            "efficacy": _outcome("efficacy", "classic", {"prob": 99.0, "magnitude": 88.4, "EM": 98.2}),
            "perplexity": _outcome("perplexity", "classic", {"ppl": 22.05, "change": 3.2}, "ppl")}}
            for r in v0["results"]],
    }


def _samples() -> list[dict]:
    """Rows in the shapes of runs/loop.py's _sample and _fc_sample; matches follow a fixed
    pattern so the tests can count them."""
    rows = []

    def add(dk, method, edited_with, setting, i, match, query=None):
        rows.append({"dataset": dk, "method": method, "edited_with": edited_with, "record_id": f"{dk}-{i}",
                     "setting": setting, "probe": setting, "query": query or f"The capital of X{i} is",
                     "expected": "Paris" if setting != "no-edit-P" else "Rome", "generated": f" Paris, gen {i}",
                     "match": match, "decode_match": match})

    for dk in DATASETS:
        for i in range(N_RECORDS):
            add(dk, "none", "none", "no-edit-P", i, True)
            add(dk, "none", "none", "no-edit-N", i, i % 5 == 0)
            for setting in ("factcheck-no-edit", "factcheck-before"):
                rows.append({"dataset": dk, "method": "none", "edited_with": "none", "record_id": f"{dk}-{i}",
                             "setting": setting, "probe": setting, "query": f"X{i} is in Paris.", "expected": "true",
                             "generated": " True.", "answer": "true", "match": True})
            for j, m in enumerate(METHODS):
                for k, setting in enumerate(("PP", "PN", "NN", "NP")):
                    edited_with = "positive" if setting in ("PP", "PN") else "negative"
                    query = PAYLOAD if (dk, i, m, setting) == ("mcf", 3, "memit", "PN") else None
                    add(dk, m, edited_with, setting, i, (i + j + k) % 3 != 0, query)
                for setting in ("factcheck-after", "factcheck-control"):
                    rows.append({"dataset": dk, "method": m, "edited_with": "positive", "record_id": f"{dk}-{i}",
                                 "setting": setting, "probe": setting, "query": f"X{i} is in Paris.",
                                 "expected": "true", "generated": " False.", "answer": "false", "match": False})
    return rows


def _png(path: Path, label: str) -> None:
    fig = Figure(figsize=(2.0, 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1, 2], [0, 1, 0])
    ax.set_title(label, fontsize=8)
    fig.savefig(path, format="png", dpi=60)


def _run_dir(root: Path, name: str, preserve: bool, schema: int = 0) -> Path:
    d = root / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(_summary_v1(preserve) if schema else _summary(preserve)))
    (d / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in _samples()))
    return d


def _trace_dir(root: Path) -> Path:
    d = root / "trace"
    d.mkdir()
    figures = {"block": "trace_block.png", "mlp": "trace_mlp.png", "attn": "trace_attn.png",
               "summary": "trace_summary.png"}
    (d / "trace.json").write_text(json.dumps({
        "model": "tiny", "data": "mcf", "n_known": 17, "num_layers": 4,
        "recommendation": {"kind": "mlp", "peak_layer": 2, "window": [1, 2, 3], "rule": "peak of the MLP effect"},
        "figures": figures}))
    for key, name in figures.items():
        if key != "attn":  # left out on purpose: the page must say so
            _png(d / name, key)
    return d


def _analysis_dir(root: Path) -> Path:
    d = root / "analysis"
    d.mkdir()
    (d / "analysis.json").write_text(json.dumps({
        "model": "tiny", "method": "memit", "data": "mcf", "layer": 2, "n_selected": 12,
        "summary": {"ratio_mean": 0.8123, "ratio_median": 0.8, "ratio_std": 0.05, "cos_mean": 0.91, "cos_median": 0.92,
                    "cos_std": 0.03, "norm_m1_m0_mean": 1.5, "norm_m2_m0_mean": 1.7,
                    "m0_differs_between_p_and_negp": True},
        "figures": {"pca": "analysis_pca.png", "tsne": "analysis_tsne.png"}}))
    for name in ("analysis_pca.png", "analysis_tsne.png"):
        _png(d / name, name)
    return d


def _cli(args: list[str]):
    return invoke(["report", *args])


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report_html")
    # runA in today's summary schema (with classic metrics), runB in schema 0.
    dirs = [_run_dir(root, "runA", True, schema=1), _run_dir(root, "runB", False), _trace_dir(root), _analysis_dir(root)]
    page = root / "out" / "report.html"
    result = _cli([*map(str, dirs), "--out", str(root / "tables"), "--html", str(page)])
    assert result.exit_code == 0, result.output
    return {"root": root, "page": page, "html": page.read_text(encoding="utf-8"), "samples": _samples() * 2}


# --- without a browser ----------------------------------------------------------------------
def test_page_holds_the_tables_and_is_self_contained(report):
    html = report["html"]
    assert (report["root"] / "tables" / "negation.md").is_file()  # the Markdown tables are still written
    for table in ("negation", "factcheck", "ablation", "classic"):
        assert f'id="ep-table-{table}"' in html
    assert html.count('<tr class="no-edit">') == 3 * len(DATASETS)  # negation, fact-check, classic, per dataset
    assert "efficacy prob: protocol of a fabricated metric" in html  # the classic table's legend
    assert not re.search(r"https?://|<link\b|\bsrc=\"(?!data:)", html)  # nothing is fetched
    assert html.count('class="chart chart-negation"') == len(DATASETS)
    assert html.count('class="chart chart-factcheck"') == len(DATASETS)
    assert "Recommended edit layers" in html and "peak of the MLP effect" in html and "0.8123" in html
    assert html.count("data:image/png;base64,") == 2 * len(DATASETS) + 3 + 2  # charts, trace, analysis figures
    assert "trace_attn.png not found" in html


def test_samples_are_embedded_as_escaped_json(report):
    html = report["html"]
    block = re.search(r'<script type="application/json" id="ep-samples-data">(.*?)</script>', html, re.S)
    assert block is not None
    rows = json.loads(block.group(1))
    assert len(rows) == len(report["samples"])
    assert {r["run"] for r in rows} == {"runA", "runB"}
    assert sum(r["query"] == PAYLOAD for r in rows) == 2  # the payload survives, as data
    assert "<" not in block.group(1)  # so no </script> or <!-- can end the block early
    assert html.count("</script>") == html.count("<script")


def test_chart_titles_fit_the_figure():
    """A long title is wrapped inside the image, not cut at its edges."""
    title = "Exact match (%) on positive and negated queries: a-model-with-a-long-name — counterfact-sample-large"
    for groups in (["No edit", "memit"], ["No edit", "memit", "alphaedit", "rome", "ft", "grace"]):
        fig = grouped_bars(groups, ["PP", "PN", "NN", "NP"], [[1, 2, 3, 4]] * len(groups), title)
        fig.canvas.draw()
        box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1
        assert "\n" in fig.axes[0].get_title()


def test_counts_balanced_and_legends_in_the_written_tables(report):
    tables = report["root"] / "tables"
    header = (tables / "factcheck.csv").read_text().splitlines()[0].split(",")
    assert header[:9] == ["Model", "Dataset", "Method", "Eff", "Eff lo", "Eff hi", "Eff n", "Acc", "Acc lo"]
    # Balanced added after every earlier column (its lo/hi/n only where a run has it)
    assert header.index("Balanced") > max(i for i, c in enumerate(header) if c.startswith("Control"))
    negation = (tables / "negation.md").read_text()
    assert "- **PP**: edited with s r → o*" in negation and "- **Protocol**: docs/protocol.md#negated-queries" in negation
    html = report["html"]
    assert '<span class="ep-n" data-k="35" data-n="40">35/40</span>' in html  # runA's PN
    assert f"87.5 [{PN_WILSON[0]:.1f}, {PN_WILSON[1]:.1f}]" in html  # the interval kept
    assert "69.4 [–]<span" not in html  # 69.4 of 40 records is no k/40: no count


def test_embed_json_round_trips_markup():
    value = {"q": "</script><!-- & --> </SCRIPT>", "n": [1, 2.5, None, True]}
    text = embed_json(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == value


def test_trace_and_analysis_only(tmp_path):
    dirs = [_trace_dir(tmp_path), _analysis_dir(tmp_path)]
    page = tmp_path / "only.html"
    result = _cli([*map(str, dirs), "--out", str(tmp_path / "tables"), "--html", str(page)])
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert 'id="tables"' not in html and 'id="samples"' not in html and 'id="traces"' in html
    assert not (tmp_path / "tables").exists()
    # Without --html there is nothing to write for them.
    result = _cli([str(d) for d in dirs])
    assert result.exit_code == 2 and "--html" in result.output


def test_a_directory_of_nothing_known_is_refused(tmp_path):
    result = _cli([str(tmp_path), "--html", str(tmp_path / "x.html")])
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "summary.json" in out and "trace.json" in out and "analysis.json" in out
    assert not (tmp_path / "x.html").exists()


# --- in headless Chromium -------------------------------------------------------------------
@pytest.fixture
def page(driver, report):
    driver.get(report["page"].as_uri())  # a fresh page (and filter state) per test
    return driver


def _by_css(drv, css):
    from selenium.webdriver.common.by import By

    return drv.find_elements(By.CSS_SELECTOR, css)


def _select(drv, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(drv.find_element(By.ID, element_id)).select_by_value(value)


def _count(drv) -> dict[str, int]:
    el = _by_css(drv, "#ep-count")[0]
    return {k: int(el.get_attribute(f"data-{k}")) for k in ("shown", "matching", "total")} | {"text": el.text}


def _rows(drv) -> list[dict[str, str]]:
    """The drawn sample rows' data attributes (one script call: fast for 500 rows)."""
    return drv.execute_script(
        "return Array.from(document.querySelectorAll('#ep-samples tbody tr')).map(function (tr) {"
        " return {method: tr.dataset.method, setting: tr.dataset.setting, match: tr.dataset.match,"
        " text: tr.textContent}; });")


def test_tables_charts_and_figures_render(page):
    # one "No edit" row per dataset, then each method of each of the two runs
    assert len(_by_css(page, "#ep-table-negation tbody tr")) == len(DATASETS) + 2 * len(METHODS) * len(DATASETS)
    no_edit = _by_css(page, "#ep-table-negation tr.no-edit")
    assert no_edit and all("No edit" in tr.text for tr in no_edit)
    assert len(_by_css(page, "#ep-table-ablation tbody tr")) == 2 * len(METHODS) * len(DATASETS)
    # The classic table: runA's No edit rows and its methods (runB, schema 0, has none).
    classic = _by_css(page, "#ep-table-classic tbody tr")
    assert len(classic) == len(DATASETS) + len(METHODS) * len(DATASETS)
    header = _by_css(page, "#ep-table-classic thead th")
    # one model in every row: its column goes, said once above the table (the datasets differ: kept)
    assert [th.text for th in header] == ["Dataset", "Method", "efficacy prob", "efficacy magnitude", "efficacy EM",
                                          "perplexity ppl", "perplexity change"]
    where = _by_css(page, "#tables p.ep-where")
    assert where and all(p.text.startswith("Every row: model ") and "dataset" not in p.text for p in where)
    assert "21.4" in classic[0].text and "88.4" in _by_css(page, "#ep-table-classic")[0].text
    assert _by_css(page, "ul.ep-legend-classic li")[0].is_displayed()
    charts = _by_css(page, "figure.chart img")
    figures = _by_css(page, ".panel.trace figure img") + _by_css(page, ".panel.analysis figure img")
    assert len(charts) == 2 * len(DATASETS) and len(figures) == 5
    for img in charts + figures:
        assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 0
        assert img.size["width"] > 0 and img.size["height"] > 0
    assert "trace_attn.png not found" in _by_css(page, ".panel.trace")[0].text


def test_sample_filters(page, report):
    samples = report["samples"]
    first = _count(page)
    assert first["total"] == len(samples) and first["matching"] == len(samples) and first["shown"] == 500
    assert len(_rows(page)) == 500 and "Showing 500 of" in first["text"]

    _select(page, "ep-f-method", "memit")
    rows, count = _rows(page), _count(page)
    assert {r["method"] for r in rows} == {"memit"}
    assert count["matching"] == sum(s["method"] == "memit" for s in samples)

    _select(page, "ep-f-dataset", "zsre")
    _select(page, "ep-f-setting", "NP")
    _select(page, "ep-f-match", "no")
    rows, count = _rows(page), _count(page)
    want = [s for s in samples
            if (s["method"], s["dataset"], s["setting"], s["match"]) == ("memit", "zsre", "NP", False)]
    assert count["matching"] == count["shown"] == len(rows) == len(want) > 0
    assert {(r["setting"], r["match"]) for r in rows} == {("NP", "no")}


def test_hallucinated_under_negation_preset(page, report):
    page.find_element("id", "ep-preset-hallucinated").click()
    rows, count = _rows(page), _count(page)
    want = [s for s in report["samples"] if s["setting"] == "PN" and s["match"] is True]
    assert count["matching"] == len(rows) == len(want) > 0
    assert {(r["setting"], r["match"]) for r in rows} == {("PN", "yes")}
    assert "none" not in {r["method"] for r in rows}  # the unedited model has no PN setting
    assert page.find_element("id", "ep-preset-hallucinated").get_attribute("aria-pressed") == "true"
    page.find_element("id", "ep-reset").click()
    assert _count(page)["matching"] == len(report["samples"])


def test_search_and_markup_in_data_stay_text(page):
    box = page.find_element("id", "ep-f-search")
    box.send_keys("zsre-17")
    rows = _rows(page)
    assert rows and all("zsre-17" in r["text"] for r in rows)
    box.clear()
    box.send_keys("pwned")
    rows = _rows(page)
    assert len(rows) == 2 and all("</script><script>window.__pwned = 1</script>" in r["text"] for r in rows)
    assert page.execute_script("return window.__pwned === undefined")  # the payload never ran


def test_screenshot(page, tmp_path):
    page.find_element("id", "ep-preset-hallucinated").click()  # show the browser with a filter applied
    # A fixed-height sample pane: its 75vh would otherwise grow with the tall window below.
    height = page.execute_script("document.querySelector('.samples-wrap').style.maxHeight = '600px';"
                                 "return document.documentElement.scrollHeight")
    page.set_window_size(1400, min(int(height) + 100, 8000))
    shot = tmp_path / "report_html.png"
    assert page.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    shutil.copyfile(shot, SCREENSHOT_COPY)
    print(f"report screenshot: {SCREENSHOT_COPY} (also {shot})")
    page.set_window_size(1400, 1000)
    assert os.path.getsize(SCREENSHOT_COPY) == shot.stat().st_size


def test_run_header(page):
    facts = {dd.get_attribute("data-fact"): dd.text for dd in _by_css(page, "#runs dl.ep-facts dd")}
    assert facts["model"] == "tiny" and facts["seed"] == "0" and facts["runs"] == "2"
    assert "mcf (40), zsre (40)" in facts["datasets (records)"]
    assert facts["editprobe"] == "9.9.9, unknown"  # runB (schema 0) recorded none
    assert "2026-01-02 03:04 UTC" in facts["finished"] and "file time of summary.json" in facts["finished"]
    rows = [tr.text for tr in _by_css(page, "#ep-table-runs tbody tr")]
    assert len(rows) == 2 and rows[0].startswith("runA 2026-01-02 03:04 UTC 9.9.9 tiny")


def test_counts_and_a_legend_under_every_table(page):
    pn = [td for td in _by_css(page, "#ep-table-negation tbody td") if "35/40" in td.text]
    assert len(pn) == len(METHODS) * len(DATASETS)  # runA's PN cells
    assert pn[0].text.startswith("87.5 [") and pn[0].get_attribute("title") == "35 of 40 records"
    assert "Balanced" in [th.text for th in _by_css(page, "#ep-table-factcheck thead th")]
    tables = _by_css(page, "#tables table.ep-table")
    assert len(tables) >= 5
    for table in tables:
        name = table.get_attribute("id").removeprefix("ep-table-")
        block = page.execute_script("return arguments[0].parentElement.nextElementSibling", table)
        assert block.get_attribute("data-table") == name
        items = _by_css(block, "ul.ep-legend li")
        assert items and all(li.is_displayed() for li in items), name
    negation = _by_css(page, ".ep-legend-negation")[0].text
    assert "PP:" in negation and "PN|PP:" in negation and "Protocol:" in negation and "No edit:" in negation


def test_sample_view_shows_the_old_target_and_the_settings_side_by_side(page):
    heads = [th.text for th in _by_css(page, "#ep-samples thead th")]
    assert heads.index("Old target o") == heads.index("Expected") - 1
    _select(page, "ep-f-method", "memit")
    _select(page, "ep-f-setting", "PN")
    row = _by_css(page, "#ep-samples tbody tr")[0]
    assert "Rome" in row.text and "Paris" in row.text  # the old object o beside o*
    _by_css(row, ".ep-record-link")[0].click()
    panel = _by_css(page, "#ep-record")[0]
    assert panel.is_displayed() and panel.get_attribute("data-record") == "mcf-0"
    assert [th.text for th in _by_css(panel, "thead th")][1:] == ["PP", "PN", "NN", "NP"]
    assert "old target o: Rome" in panel.text and "new target o*: Paris" in panel.text
    answers = [td.text for td in _by_css(panel, "tbody tr")[2].find_elements("css selector", "td")]
    assert len(answers) == 4 and all(a.strip() == "Paris, gen 0" for a in answers)  # what each setting answered
    page.find_element("id", "ep-record-close").click()
    assert not panel.is_displayed()


def test_sorting_by_a_column(page):
    _select(page, "ep-f-method", "alphaedit")
    _select(page, "ep-f-setting", "PP")
    before = [r["text"] for r in _rows(page)]
    header = [th for th in _by_css(page, "#ep-samples thead th") if th.text.startswith("Record")][0]
    header.click()
    ids = page.execute_script("return Array.from(document.querySelectorAll('#ep-samples tbody .ep-record-link'))"
                              ".map(function (b) { return b.textContent; });")
    assert ids == sorted(ids) and [r["text"] for r in _rows(page)] != before
    assert header.get_attribute("aria-sort") == "ascending"
    header.click()
    again = page.execute_script("return Array.from(document.querySelectorAll('#ep-samples tbody .ep-record-link'))"
                                ".map(function (b) { return b.textContent; });")
    assert again == sorted(ids, reverse=True) and header.get_attribute("aria-sort") == "descending"


def test_csv_export_of_the_filtered_rows(page, report):
    import csv
    import io

    _select(page, "ep-f-method", "alphaedit")
    _select(page, "ep-f-setting", "NP")
    _select(page, "ep-f-match", "no")
    page.find_element("id", "ep-export").click()
    link = page.find_element("id", "ep-export-link")
    assert link.get_attribute("href").startswith("blob:") and link.get_attribute("download") == "editprobe-samples.csv"
    text = page.execute_async_script(
        "var done = arguments[arguments.length - 1];"
        "fetch(document.getElementById('ep-export-link').href).then(function (r) { return r.text(); }).then(done);")
    rows = list(csv.DictReader(io.StringIO(text)))
    want = [s for s in report["samples"] if (s["method"], s["setting"], s["match"]) == ("alphaedit", "NP", False)]
    assert len(rows) == len(want) == _count(page)["matching"] > 0
    assert {(r["method"], r["setting"], r["match"]) for r in rows} == {("alphaedit", "NP", "no")}
    assert {r["target_true"] for r in rows} == {"Rome"} and rows[0]["run"] == "runA"
