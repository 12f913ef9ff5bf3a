"""The battery table and the trained-cells mark on constructed summaries (report/battery.py,
report/cells.py): layout, the No-edit row, each probe's n, the floor flag, the † cells in every
rendering, and tables without marks left as they were."""

from __future__ import annotations

from editprobe.probes.base import Metric, ProbeOutcome
from editprobe.report import load_summaries
from editprobe.report.battery import battery_table
from editprobe.report.cells import TRAINED_NOTE, csv_frame, text_rows
from editprobe.report.html import Sources, build_html
from editprobe.report.tables import all_tables, classic_table, negation_table, to_latex, to_markdown
from editprobe.runs.summary import RunSummary


def metric(value, n=10, lo=None, hi=None, label="x") -> Metric:
    return Metric(value=value, n=n, lo=lo, hi=hi, label=label, higher_is_better=True)


def battery(grounded: float, npara: float, flag: str | None = None, n: int = 10) -> dict[str, ProbeOutcome]:
    details = {"every_record": ["negation PP", "heldout-negation NPara"], "some_records": [], "flag": None}
    return {
        "grounded": ProbeOutcome(probe="grounded", version=1, table="battery", details=details,
                                 metrics={"grounded": metric(grounded, n, grounded - 5, grounded + 5, "conj")}),
        "heldout-negation": ProbeOutcome(probe="heldout-negation", version=1, table="battery", details={"flag": flag},
                                         metrics={"NPara": metric(npara, n, label="npara"),
                                                  "NAlt": metric(npara + 1, n, label="nalt")}),
    }


NEGATION = {"PP": 90.0, "PN": 40.0, "NN": 80.0, "NP": 30.0, "PP-PN": 50.0, "Avg": 45.0}


def negation(values=NEGATION) -> ProbeOutcome:
    return ProbeOutcome(probe="negation", version=1, table="negation",
                        metrics={k: metric(v, label="em") for k, v in values.items()})


def summary(rows: list[dict], no_edit: dict | None = None) -> RunSummary:
    return RunSummary.model_validate({
        "config": {"model": "m"},
        "datasets": {"cf": {"n_records": 10, "no_edit": no_edit or {}}},
        "results": [{"dataset": "cf", "preserve_previous": True, **r} for r in rows]})


DEFEND_CELLS = {"negation": ["PN", "NP", "PP-PN", "Avg"], "heldout-negation": ["NPara"]}


def runs() -> list[RunSummary]:
    flag = "at its floor: the unedited model scores 2.0 on the true fact"
    return [summary([{"method": "memit", "probes": {"negation": negation(), **battery(40.0, 20.0, flag)}},
                     {"method": "memit", "variant": "defend", "trained_forms": ["negated", "positive"],
                      "trained_cells": DEFEND_CELLS,
                      "probes": {"negation": negation(), **battery(30.0, 10.0, flag)}}],
                    no_edit={"grounded": battery(70.0, 2.0, flag, n=8)["grounded"],
                             "heldout-negation": battery(70.0, 2.0, flag, n=8)["heldout-negation"]})]


def test_battery_layout_headline_first_no_edit_row_and_n():
    df, legend = battery_table(runs())
    assert list(df.columns) == ["Model", "Dataset", "Method", "grounded", "grounded over", "grounded n",
                                "heldout-negation NPara", "heldout-negation NAlt", "heldout-negation n"]
    assert list(df["Method"]) == ["No edit", "memit", "memit+defend"]
    assert list(df["grounded"]) == [70.0, 40.0, 30.0] and list(df["grounded n"]) == [8, 10, 10]
    assert df["grounded over"].iloc[0] == "negation PP, heldout-negation NPara"
    assert legend["grounded"] == "conj (%)" and legend["heldout-negation NPara"] == "npara (%)"


def test_battery_marks_the_floor_and_the_trained_cells():
    df, _ = battery_table(runs())
    rows = text_rows(df)
    header = list(df.columns)
    defend = dict(zip(header, rows[2]))
    assert defend["grounded"] == "30.0 [25.0, 35.0]"  # nothing it reads was trained on
    assert defend["heldout-negation NPara"] == "10.0 [–]†‡" and defend["heldout-negation NAlt"] == "11.0 [–]‡"
    assert dict(zip(header, rows[1]))["heldout-negation NPara"] == "20.0 [–]‡"
    md = to_markdown(df)
    assert md.endswith(f"\n{TRAINED_NOTE}\n‡ heldout-negation (m, cf): at its floor: the unedited model scores "
                       "2.0 on the true fact\n")
    csv = csv_frame(df)
    assert list(csv["trained on"]) == ["", "", "heldout-negation NPara"]
    assert list(csv["flagged"])[1] == "heldout-negation NPara; heldout-negation NAlt"
    assert list(csv["grounded n"]) == [8, 10, 10]
    tex = to_latex(df, "Battery")
    assert r"10.0 [--]\dag{}\ddag{}" in tex and r"\dag{} the editor trained on" in tex


def test_every_table_marks_the_trained_cells_and_only_those():
    df = negation_table(runs())
    text = {row[2]: dict(zip(df.columns, row)) for row in text_rows(df)}
    assert text["memit+defend"]["PN"].endswith("†") and text["memit+defend"]["NP"].endswith("†")
    assert text["memit+defend"]["PP−PN"].endswith("†") and text["memit+defend"]["Avg"].endswith("†")
    assert not text["memit+defend"]["PP"].endswith("†") and not text["memit+defend"]["NN"].endswith("†")
    assert not any(cell.endswith("†") for cell in text["memit"].values())
    assert TRAINED_NOTE in to_markdown(df) and list(csv_frame(df)["trained on"]) == ["", "PN; NP; PP−PN; Avg"]
    page = build_html(Sources(), runs())
    assert "40.0 [–]†" in page and TRAINED_NOTE in page


def test_tables_without_marks_render_as_before():
    plain = [summary([{"method": "memit", "probes": {"negation": negation(),
                                                      "efficacy": ProbeOutcome(probe="efficacy", version=1,
                                                                               metrics={"EM": metric(90.0)})}}])]
    names = [name for name, *_ in all_tables(plain)]
    assert "battery" not in names and battery_table(plain) is None
    for df in (negation_table(plain), classic_table(plain)[0]):
        assert "marks" not in df.attrs and "notes" not in df.attrs
        assert "†" not in to_markdown(df) and "trained on" not in csv_frame(df).columns
        assert r"\dag" not in to_latex(df, "t")


def test_a_summary_written_before_trained_cells_reads_unmarked(tmp_path):
    import json

    raw = {"config": {"model": "m"}, "datasets": {}, "results": [
        {"dataset": "cf", "method": "memit", "variant": "defend", "probes": {
            "negation": negation().model_dump(mode="json")}}]}
    (tmp_path / "summary.json").write_text(json.dumps(raw))
    df = negation_table(load_summaries([tmp_path]))
    assert not any("†" in cell for row in text_rows(df) for cell in row)


def test_a_row_trained_on_the_negated_query_shows_the_mark_on_pn_np(run_ws, tmp_path):
    """memit with negation: defend trains on the negated query: its PN and NP cells (and what is
    computed from them) carry the mark in every rendering; plain memit's do not; PP never."""
    from test_runs_helpers import config

    from editprobe.models import load_model
    from editprobe.runs import run_experiment

    loaded = load_model(str(run_ws["model"]))
    dirs = []
    for name, extra in (("plain", {}), ("defend", {"negation": "defend"})):
        out = tmp_path / name
        overrides = {"mom2_corpus": str(run_ws["corpus"]), **extra}
        s = run_experiment(config(run_ws, out, probes=("negation", "grounded"), overrides=overrides), loaded=loaded,
                           progress=False)
        dirs.append(out)
        row = s["results"][0]
        assert ("negated" in row["trained_forms"]) == bool(extra)
        assert row["trained_cells"] == ({"negation": ["PN", "NP", "PP-PN", "PP-NP", "NN-PN", "NN-NP", "Avg", "PN|PP",
                                                      "NP|NN"]} if extra else {})
        assert s["results"][0]["probes"]["grounded"]["metrics"]["grounded"]["value"] == \
            s["results"][0]["probes"]["negation"]["metrics"]["PP"]["value"]  # PP is the only part that ran
    summaries = load_summaries(dirs)
    df = negation_table(summaries)
    text = {row[2]: dict(zip(df.columns, row)) for row in text_rows(df)}
    assert set(text) == {"No edit", "memit", "memit+defend"}
    for setting in ("PN", "NP"):
        assert text["memit+defend"][setting].endswith("†") and not text["memit"][setting].endswith("†")
    assert not any(row["PP"].endswith("†") for row in text.values())
    assert TRAINED_NOTE in to_markdown(df) and r"\dag{}" in to_latex(df, "t")
    page = build_html(Sources(runs=dirs), summaries)
    assert "memit+defend" in page and TRAINED_NOTE in page
    battery_df, _ = battery_table(summaries)
    assert list(battery_df["Method"]) == ["No edit", "memit", "memit+defend"]
    assert not any("†" in cell for row in text_rows(battery_df) for cell in row)  # PP only: the edited prompt


def test_a_fact_check_at_its_floor_is_flagged_in_its_table():
    from editprobe.report.tables import factcheck_table

    flag = "at its floor: the unedited model scores 0.0 on the true fact"

    def factcheck(acc, flagged):
        return ProbeOutcome(probe="factcheck", version=1, table="factcheck", details={"flag": flag if flagged else None},
                            metrics={"Eff": metric(97.0), "Acc": metric(acc), "Control": metric(1.0)})

    rows = [{"method": "memit", "probes": {"factcheck": factcheck(3.0, True)}},
            {"method": "alphaedit", "probes": {"factcheck": factcheck(2.0, False)}}]
    df = factcheck_table([summary(rows)])
    text = to_markdown(df)
    assert "3.0 [–]‡" in text and "2.0 [–]‡" not in text and f"‡ fact-check (m, cf): {flag}" in text
    assert list(csv_frame(df)["flagged"].fillna("")) == ["Acc", ""]


def test_the_table_says_what_each_probe_skipped_and_which_did_not_apply():
    from editprobe.report.battery import skipped_text

    assert skipped_text({"the paraphrase holds braces": 1, "cannot be negated": 0}) == "1 (the paraphrase holds braces)"
    assert skipped_text({"question": {"no table entry": 2}, "cloze": {}}) == "question: 2 (no table entry)"
    assert skipped_text({}) == "" and skipped_text(None) == ""
    outcomes = battery(40.0, 20.0)
    held = outcomes["heldout-negation"]
    outcomes["heldout-negation"] = held.model_copy(update={"details": {"skipped": {"no paraphrase prompts": 3}}})
    s = summary([{"method": "memit", "probes": {"negation": negation(), **outcomes}}])
    s = s.model_copy(update={"config": {"model": "m", "probes": ["negation", "heldout-negation", "question-forms",
                                                                 "grounded"]}})
    s.datasets["cf"].probes = ["negation", "heldout-negation", "grounded"]
    df, _ = battery_table([s])
    text = to_markdown(df)
    assert "heldout-negation (m, cf) skipped: 3 (no paraphrase prompts)" in text
    assert "question-forms (m, cf): not asked: it applies to none of the dataset's records" in text
