"""The curve over edits (eval: every, docs/curves.md): a point after K batches equals a separate
run stopped after K batches (PRUNE's finalized snapshot included), the held-out slice is records
no stage edits, and a run killed between two points resumes to the same curve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kill_driver import command
from test_runs_helpers import config, subprocess_env, workspace

from editprobe.runs import RunPlan, read_summary, run_experiment
from editprobe.runs.config import RunConfigError

# PRUNE: a point measures a finalized snapshot; IKE: through its transform of the facts so far.
METHODS = ("memit", "prune", "ike")
SETTINGS = {"positive": ("PP", "PN", "PN|PP", "PP-PN"), "negative": ("NN", "NP", "NP|NN", "NN-NP")}


@pytest.fixture(scope="module")
def curve_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    ws = workspace(root, n=12)  # 6 edited, the rest for the held-out slice
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        curve = run_experiment(_config(ws, root / "curve", methods=METHODS, n=6, batch_size=2, eval_every=1,
                                      curve={"heldout": 4}), progress=False)
        stopped = {k: run_experiment(_config(ws, root / f"stopped{k}", methods=METHODS, n=2 * k, batch_size=2),
                                     progress=False) for k in (1, 2)}
    return {"root": root, "ws": ws, "curve": curve, "stopped": stopped}


def _config(ws, out, **fields):
    return config(ws, out, overrides={"mom2_corpus": str(ws["corpus"]), "n_demos": 0}, **fields)


def _points(row, part="edited"):
    return {(p["stage"], p["batches"]): p for p in row["curve"] if p["part"] == part}


def _metric(summary_or_point, probe, key):
    m = summary_or_point["probes"][probe]["metrics"][key]
    return m["value"], m["lo"], m["hi"], m["n"]


@pytest.mark.parametrize("method", METHODS)
def test_a_point_after_k_batches_equals_a_run_stopped_after_k_batches(curve_runs, method):
    row = next(r for r in curve_runs["curve"]["results"] if r["method"] == method)
    points = _points(row)
    assert sorted(points) == [(s, b) for s in ("negative", "positive") for b in (1, 2, 3)]
    for k, stopped in curve_runs["stopped"].items():
        short = next(r for r in stopped["results"] if r["method"] == method)
        for stage, keys in SETTINGS.items():
            point = points[(stage, k)]
            assert point["edits"] == 2 * k and point["n_records"] == 2 * k
            for key in keys:
                assert _metric(point, "negation", key) == _metric(short, "negation", key), (method, stage, k, key)
    # The last point is the final model: the run's own final numbers.
    for stage, keys in SETTINGS.items():
        for key in keys:
            assert _metric(points[(stage, 3)], "negation", key) == _metric(row, "negation", key)


def test_the_heldout_slice_is_records_no_stage_edits(curve_runs):
    plan = RunPlan.build(config(curve_runs["ws"], curve_runs["root"] / "unused", methods=METHODS, n=6, batch_size=2,
                                eval_every=1, curve={"heldout": 4}))
    dataset = plan.datasets[0]
    edited = {r.id for r in dataset.records}
    assert len(dataset.heldout) == 4 and not edited & {r.id for r in dataset.heldout}
    reseeded = RunPlan.build(config(curve_runs["ws"], curve_runs["root"] / "unused", methods=METHODS, n=6,
                                    batch_size=2, eval_every=1, curve={"heldout": 4}, seed=1))
    assert {r.id for r in reseeded.datasets[0].heldout} != {r.id for r in dataset.heldout}
    row = curve_runs["curve"]["results"][0]
    heldout = _points(row, "heldout")
    assert sorted(heldout) == sorted(_points(row))
    assert all(p["n_records"] == 4 and "perplexity" in p["probes"] for p in heldout.values())


def test_without_eval_every_a_run_has_no_curve_and_its_identity_is_unchanged(curve_runs):
    assert all(r["curve"] == [] for s in curve_runs["stopped"].values() for r in s["results"])
    cfg = config(curve_runs["ws"], curve_runs["root"] / "x")
    assert "eval_every" not in cfg.identity() and "curve" not in cfg.identity()


@pytest.mark.parametrize("fields, message", [
    ({"eval": "every"}, "eval: every needs eval_every"),
    ({"eval": "final", "eval_every": 2}, "drop one"),
    ({"eval_every": 1, "probes": ("negation",)}, "curve.probes ['efficacy'] are not among the run's probes"),
    ({"eval_every": 1, "curve": {"heldout": -1}}, "curve.heldout"),
])
def test_bad_curve_settings_are_one_line_naming_them(curve_runs, fields, message):
    with pytest.raises(RunConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("|", r"\|")):
        config(curve_runs["ws"], curve_runs["root"] / "x", **fields)


def test_a_run_killed_between_two_points_resumes_to_the_same_curve(curve_runs, tmp_path):
    ws, env = curve_runs["ws"], subprocess_env(curve_runs["root"])
    out = tmp_path / "killed"
    args = ["run", "--model", str(ws["model"]), "--method", "memit", "--data", str(ws["data"]), "--n", "6",
            "--batch-size", "2", "--out", str(out), "--hparams", "tiny", "--set", f"mom2_corpus={ws['corpus']}",
            "--negation-table", str(ws["negations"]), "--seed", "0", "--threads", "1", "--eval-every", "2",
            "--checkpoint-every", "2"]
    # Killed right after the point of batch 2 is stored, before that batch's checkpoint (a point
    # is stored first) and before the point of batch 3: the resume replays batches 1-2 from
    # nothing, finds the stored point, and measures only the next.
    kill = "editprobe.runs.curve:StageCurve.evaluate:2:after"
    first = subprocess.run([*command(kill, []), *args], env=env, capture_output=True, text=True, timeout=900)
    assert first.returncode != 0 and not (out / "summary.json").exists(), first.stderr[-2000:]
    stored = sorted(p.name for p in (out / "stages").glob("*curve*"))
    resumed = subprocess.run([sys.executable, "-m", "editprobe", *args, "--resume"], env=env, capture_output=True,
                             text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    reference = tmp_path / "reference"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(curve_runs["root"] / "cache"))
        run_experiment(config(ws, reference, methods=("memit",), n=6, batch_size=2, eval_every=2,
                              checkpoint_every=2), progress=False)
    got, want = read_summary(out), read_summary(reference)
    assert stored and json.dumps(got["results"][0]["curve"]) == json.dumps(want["results"][0]["curve"])
    assert [p["batches"] for p in got["results"][0]["curve"] if p["part"] == "edited"] == [2, 3, 2, 3]


def test_a_study_entry_asks_for_a_curve_with_eval_every(tmp_path):
    from editprobe.studies.study import Study, expand

    study = Study.model_validate({"runs": [{"methods": ["memit"], "eval_every": 2},
                                           {"methods": ["rome"]}]})
    runs = expand(study, tmp_path)
    assert [(r.config.eval, r.config.eval_every) for r in runs] == [("every", 2), ("final", None)]
