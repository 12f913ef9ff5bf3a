"""Report tables on synthetic run directories: layout, values, no-edit rows, the ablation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from cli_helpers import invoke

from editprobe.report import ablation_table, factcheck_table, load_summaries, negation_table, to_latex, to_markdown

NEG = {"PP": 98.2, "PN": 69.4, "NN": 97.8, "NP": 81.5, "PP-PN": 28.8, "PP-NP": 16.7, "NN-PN": 28.4, "NN-NP": 16.3,
       "Avg": 22.6}


def _summary(preserve: bool, pp: float = 98.2, methods=("memit",), model="m") -> dict:
    return {
        "config": {"model": model},
        "datasets": {"mcf": {"no_edit": {"PP": 100.0, "PN": 15.4}, "factcheck_no_edit": {"Acc": 91.1, "n": 90}}},
        "results": [{"dataset": "mcf", "method": m, "preserve_previous": preserve, "negation": {**NEG, "PP": pp},
                     "factcheck": {"Eff": pp, "Acc": 64.6, "n": 80, "Control": None}} for m in methods],
    }


def _write(tmp_path, name, summary):
    d = tmp_path / name
    d.mkdir()
    (d / "summary.json").write_text(json.dumps(summary))
    return d


def test_negation_table_layout_and_values(tmp_path):
    runs = [_write(tmp_path, "a", _summary(True, methods=("memit", "alphaedit")))]
    df = negation_table(load_summaries(runs))
    assert list(df.columns) == ["Model", "Dataset", "Method", "PP", "PN", "NN", "NP", "PP−PN", "PP−NP", "NN−PN",
                                "NN−NP", "Avg", "PN|PP", "PP hits", "NP|NN", "NN hits"]
    assert list(df["Method"]) == ["No edit", "memit", "alphaedit"]
    assert df.iloc[0]["PN"] == 15.4 and pd.isna(df.iloc[0]["NN"])
    assert df.iloc[1]["PP−NP"] == 16.7 and df.iloc[1]["Avg"] == 22.6


def test_no_edit_row_once_per_model_and_dataset(tmp_path):
    runs = [_write(tmp_path, "a", _summary(True)), _write(tmp_path, "b", _summary(True, methods=("rect",))),
            _write(tmp_path, "c", _summary(True, model="other"))]
    df = negation_table(load_summaries(runs))
    assert list(zip(df["Model"], df["Method"])) == [("m", "No edit"), ("other", "No edit"), ("m", "memit"),
                                                    ("m", "rect"), ("other", "memit")]


def test_factcheck_table(tmp_path):
    df = factcheck_table(load_summaries([_write(tmp_path, "a", _summary(True))]))
    assert list(df.columns) == ["Model", "Dataset", "Method", "Eff", "Acc", "n", "Control", "Balanced"]
    assert df.iloc[0]["Acc"] == 91.1 and pd.isna(df.iloc[0]["Eff"])
    assert (df.iloc[1]["Eff"], df.iloc[1]["Acc"], df.iloc[1]["n"]) == (98.2, 64.6, 80)
    md = to_markdown(df)
    # n stays an integer, missing is "–"; a summary written before intervals has none: "[–]"
    assert "| m | mcf | No edit | – | 91.1 [–] | 90 | – | – |" in md


def test_ablation_only_when_runs_differ_in_preserve_previous(tmp_path):
    same = load_summaries([_write(tmp_path, "a", _summary(True)), _write(tmp_path, "b", _summary(True))])
    assert ablation_table(same) is None
    both = load_summaries([_write(tmp_path, "c", _summary(True)), _write(tmp_path, "d", _summary(False, pp=23.2))])
    df = ablation_table(both)
    assert list(zip(df["K_p"], df["PP"])) == [("with", 98.2), ("without", 23.2)]
    assert set(negation_table(both)["Method"]) == {"No edit", "memit (with K_p)", "memit (no K_p)"}


def test_latex_escapes_and_marks_missing(tmp_path):
    df = negation_table(load_summaries([_write(tmp_path, "a", _summary(True, model="my_model"))]))
    tex = to_latex(df, "Negation (%)")
    assert r"my\_model" in tex and r"PP$-$PN" in tex and r"\caption{Negation (\%)}" in tex
    assert "No edit & 100.0 [--] & 15.4 [--] & -- &" in tex
    assert tex.count(r"\\") == 1 + len(df)  # header + one line per row


def test_report_cli_writes_all_formats_and_prints_markdown(tmp_path):
    runs = [_write(tmp_path, "a", _summary(True)), _write(tmp_path, "b", _summary(False, pp=23.2))]
    out = tmp_path / "rep"
    result = invoke(["report", *map(str, runs), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("negation", "factcheck", "ablation"):
        for ext in ("md", "csv", "tex"):
            assert (out / f"{name}.{ext}").is_file()
    assert (out / "negation.md").read_text() in result.output
    csv = pd.read_csv(out / "ablation.csv")
    assert list(csv["PP"]) == [98.2, 23.2]


def test_report_cli_on_a_non_run_directory(tmp_path):
    result = invoke(["report", str(tmp_path)])
    assert result.exit_code == 2 and "summary.json" in " ".join(result.output.split())


@pytest.mark.parametrize("bad", [[], None])
def test_load_summaries_needs_a_directory(bad):
    with pytest.raises(ValueError):
        load_summaries(bad or [])


def test_the_ablation_compares_only_pairs_and_never_marks_rome(tmp_path):
    with_kp = _summary(True, methods=("memit", "alphaedit"))
    with_kp["results"].append({**with_kp["results"][0], "method": "rome", "preserve_previous": None})
    runs = [_write(tmp_path, "a", with_kp), _write(tmp_path, "b", _summary(False, pp=23.2))]
    summaries = load_summaries(runs)
    df = ablation_table(summaries)
    assert list(zip(df["Method"], df["K_p"])) == [("memit", "with"), ("memit", "without")]  # alphaedit: no pair
    assert list(negation_table(summaries)["Method"]) == ["No edit", "memit (with K_p)", "alphaedit (with K_p)",
                                                         "rome", "memit (no K_p)"]


def test_a_rome_result_records_that_k_p_does_not_apply():
    from editprobe.editing import method_class

    assert method_class("rome").uses_preserved_keys is False
    assert all(method_class(m).uses_preserved_keys for m in ("memit", "alphaedit", "rect", "namet"))


def test_variant_rows_and_the_cost_table(tmp_path):
    from editprobe.report.tables import cost_table

    plain, defend = _summary(True), _summary(True, pp=91.0)
    n = 10
    for s, edit, probe in ((plain, [20.0, 30.0], 2.0), (defend, [40.0, 60.0], 3.0)):
        s["datasets"]["mcf"]["n_records"] = n
        s["timings"] = {"batches": {"mcf__memit__positive": {"0": edit[0], "1": edit[1]}},
                        "probes": {"mcf__baseline": {"negation": 1.0}, "mcf__memit__positive": {"negation": probe}}}
    summaries = load_summaries([_write(tmp_path, "a", plain), _write(tmp_path, "b", defend)])
    summaries[1].results[0].variant = "defend"  # schema 0 has no variants; today's runs write it
    assert list(negation_table(summaries)["Method"]) == ["No edit", "memit", "memit+defend"]
    df = cost_table(summaries)
    assert list(df["Method"]) == ["No edit", "memit", "memit+defend"]  # one No-edit row
    assert list(df["edit s/request"])[1:] == [5.0, 10.0]  # (20 + 30) / 10 and (40 + 60) / 10
    assert list(df["negation probe ms/query"]) == [50.0, 100.0, 150.0]  # 2 queries (PP, PN) per record


def test_runs_that_differ_only_by_seed_are_aggregated(tmp_path):
    from editprobe.report.seeds import seed_table

    def seeded(name, seed, pp, **config):
        return _write(tmp_path, name, {**_summary(True, pp=pp), "seed": seed,
                                       "config": {"model": "m", "seed": seed, "out": name, **config}})

    runs = [seeded("a", 0, 90.0), seeded("b", 1, 80.0), seeded("c", 2, 70.0), seeded("d", 1, 10.0, n=5)]
    df = seed_table(load_summaries(runs))
    pp = df[df["Metric"] == "negation PP"]
    assert len(pp) == 1  # run d is another experiment (n differs) with one seed: no row
    assert (pp.iloc[0]["seeds"], pp.iloc[0]["mean"], pp.iloc[0]["sd"]) == (3, 80.0, 10.0)  # sample sd (n - 1)
    assert seed_table(load_summaries(runs[:1] + runs[3:])) is None  # no two seeds of one experiment
    # The per-run tables tell the seeds' rows apart, and only when the runs differ in seed.
    assert negation_table(load_summaries(runs[:3]))["Method"].tolist()[1:] == [
        "memit (seed 0)", "memit (seed 1)", "memit (seed 2)"]
    assert negation_table(load_summaries(runs[1:2] + runs[3:]))["Method"].tolist()[1:] == ["memit", "memit"]
