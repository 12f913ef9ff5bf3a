"""`editprobe tune` on a tiny local model: a few trials write an hparams YAML that `edit`
accepts; bad input is one line before any work; `run`'s choice picks a tuned file."""

import json

import pytest
import torch
import yaml
from cli_helpers import invoke
from tiny_trained import save_workspace

from editprobe.editing.settings import hparams as hparams_module
from editprobe.editing.settings.profiles import choose_hparams
from editprobe.models.tiny import tiny_facts


def _counterfact_file(path, subjects: slice, neighbours: bool = True):
    """CounterFact records of the tiny facts ("... is" templates, so they can be negated),
    each with a neighbourhood prompt of another subject."""
    facts = [f for f in tiny_facts() if f[0] == tiny_facts()[0][0]]
    objects = sorted({o for _, _, o in facts})
    records = []
    for i, (template, subject, obj) in list(enumerate(facts))[subjects]:
        other = facts[(i + 1) % len(facts)]
        records.append({
            "case_id": i,
            "requested_rewrite": {"prompt": template + " is", "subject": subject, "relation_id": "P103",
                                   "target_new": {"str": next(o for o in objects if o != obj)},
                                   "target_true": {"str": obj}},
            "paraphrase_prompts": [],
            "neighborhood_prompts": [other[0].format(other[1]) + " is"] if neighbours else [],
        })
    path.write_text(json.dumps(records))
    return path


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A trained tiny model saved as a local directory, a corpus for C0, dev and eval files."""
    root = tmp_path_factory.mktemp("tune")
    torch.manual_seed(0)
    saved = save_workspace(root, steps=60)
    model_dir, corpus = saved["model"], saved["corpus"]
    return {
        "root": root, "model": model_dir, "corpus": corpus,
        "dev": _counterfact_file(root / "dev.json", slice(0, 6)),
        "eval": _counterfact_file(root / "eval.json", slice(8, 12)),
        "clash": _counterfact_file(root / "clash.json", slice(4, 10)),
    }


def _tune_args(setup, out, *extra):
    return ["tune", "--model", str(setup["model"]), "--method", "memit", "--data", str(setup["dev"]),
            "--out", str(out), "--n", "4", "--batch-size", "2", "--trials", "3", "--hparams", "tiny",
            "--set", f"mom2_corpus={setup['corpus']}", "--eval", str(setup["eval"]), "--layers", "0:3",
            "--width", "1:2", "--steps", "5:25", "--threads", "1", *extra]


def test_tune_writes_a_yaml_that_edit_accepts(tiny_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tuned.yaml"
    result = invoke(_tune_args(tiny_setup, out))
    assert result.exit_code == 0, result.output
    text = out.read_text()
    fields = yaml.safe_load(text)
    assert fields["method"] == "memit" and fields["source"].startswith("editprobe tune")
    assert fields["mom2_corpus"] == str(tiny_setup["corpus"])  # --set values stay in the file
    assert 1 <= len(fields["layers"]) <= 2 and max(fields["layers"]) <= 3
    # the evidence: command, data, objective, every trial
    for needle in ("# Command: editprobe tune", "# Dev data:", "# Objective: harmonic mean", "# Wall time:",
                   "# Base settings (trial 0)"):
        assert needle in text, needle
    assert sum(line.startswith("#     ") or line.startswith("#   ") for line in text.splitlines()) == 3
    assert "best: trial" in result.stdout

    edited = tmp_path / "edited"
    result = invoke(["edit", "--model", str(tiny_setup["model"]), "--method", "memit", "--data",
                     str(tiny_setup["dev"]), "--n", "4", "--batch-size", "2", "--out", str(edited),
                     "--hparams", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((edited / "report.json").read_text())
    assert report["hparams"]["layers"] == fields["layers"] and report["hparams_file"]["chosen_by"] == "hparams"

    again = invoke(_tune_args(tiny_setup, out))  # an existing file is kept unless --overwrite
    assert again.exit_code == 2 and "--overwrite" in again.error_lines[0]


@pytest.mark.parametrize("change,message", [
    (["--data", "missing.json"], "missing.json"),
    (["--method", "nope"], "unknown method 'nope'"),
    (["--method", "rledit"], "tune searches locate-then-edit settings"),
    (["--v-lr", "2:0.1"], "--v-lr: the range 2.0:0.1 is empty"),
    (["--clamp", "0:4"], "--clamp: must be above 0"),
    (["--steps", "a:b"], "--steps: expected LO:HI (integers)"),
    (["--out", "x.json"], "must end in .yaml"),
])
def test_bad_input_is_one_line_before_any_work(tiny_setup, tmp_path, change, message):
    args = _tune_args(tiny_setup, tmp_path / "t.yaml")
    flag, value = change
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    result = invoke(args)
    assert result.exit_code == 2, result.output
    assert len(result.error_lines) == 1 and message in result.error_lines[0], result.stderr
    assert not (tmp_path / "t.yaml").exists()


def test_dev_records_overlapping_an_evaluation_set_are_refused(tiny_setup, tmp_path, monkeypatch):
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    args = _tune_args(tiny_setup, tmp_path / "t.yaml")
    args[args.index("--eval") + 1] = str(tiny_setup["clash"])
    result = invoke(args)
    assert result.exit_code == 2
    assert "share a subject or prompt with the evaluation set" in result.error_lines[0]
    assert "--exclude-overlap" in result.error_lines[0]
    # a layer range beyond the model is refused before any trial
    bad = invoke(_tune_args(tiny_setup, tmp_path / "t.yaml")[:-2] + ["--layers", "0:9", "--threads", "1"])
    assert bad.exit_code == 2 and "the model has layers 0..3" in bad.error_lines[0], bad.output


def test_overlapping_records_can_be_skipped(tiny_setup, tmp_path):
    from editprobe.jobs.tune.search import TuneConfig, choose_dev_split

    config = TuneConfig.build({"model": str(tiny_setup["model"]), "data": str(tiny_setup["dev"]), "n": 2,
                               "out": tmp_path / "t.yaml", "evaluation": (str(tiny_setup["clash"]),),
                               "exclude_overlap": True})
    dev = choose_dev_split(config)
    assert dev.skipped_overlap == 2  # records 4 and 5 of the dev file are in the clash set
    assert [item.record.id for item in dev.plan.items] == ["0", "1"]


def test_run_picks_the_tuned_file_of_the_dataset_kind(tmp_path, monkeypatch):
    shipped = hparams_module.HPARAMS_DIR
    local = tmp_path / "hparams"
    (local / "memit").mkdir(parents=True)
    (local / "memit" / "smollm2-135m.yaml").write_text((shipped / "memit" / "smollm2-135m.yaml").read_text())
    (local / "memit" / "smollm2-135m@zsre.yaml").write_text(
        (shipped / "memit" / "smollm2-135m.yaml").read_text().replace("v_lr: 0.5", "v_lr: 0.9"))
    monkeypatch.setattr(hparams_module, "HPARAMS_DIR", local)

    tuned = choose_hparams("memit", "smollm2-135m", dataset="zsre-sample")
    assert tuned.chosen_by == "tuned for zsre" and tuned.path.name == "smollm2-135m@zsre.yaml"
    assert choose_hparams("memit", "smollm2-135m", dataset="counterfact-sample").chosen_by == "shipped default"
    assert choose_hparams("memit", "smollm2-135m").chosen_by == "shipped default"
    # an explicit file still wins over the tuned one
    assert choose_hparams("memit", "smollm2-135m", hparams="smollm2-135m", dataset="zsre-sample").chosen_by == "hparams"


def test_the_shipped_zsre_setting_is_what_zsre_runs_of_the_built_in_model_read():
    from editprobe.editing.settings.hparams import load_hparams_file
    from editprobe.editing.registry import method_class

    chosen = choose_hparams("memit", "smollm2-135m", dataset="zsre-sample")
    assert chosen.chosen_by == "tuned for zsre" and chosen.path.name == "smollm2-135m@zsre.yaml"
    tuned = load_hparams_file(chosen.path, method_class("memit").hparams_cls)
    assert (tuned.layers, tuned.v_lr, tuned.v_num_grad_steps) == ([6, 7, 8, 9], 1.66, 28)
    assert "Held out" in chosen.path.read_text()  # the file carries its evidence
    assert choose_hparams("memit", "smollm2-135m", dataset="counterfact-sample").chosen_by == "shipped default"


def test_ties_go_to_the_earlier_trial_so_the_base_setting_stays_unless_beaten():
    from editprobe.jobs.tune.search import TrialRecord, select_best

    def trial(number, score, avg, state="complete"):
        return TrialRecord(number=number, state=state, fields={}, score=score, avg=avg)

    trials = [trial(0, 82.5, 4.2), trial(1, 82.5, 25.0), trial(2, 90.0, None, "pruned"), trial(3, 77.0, 60.0)]
    assert select_best(trials).number == 0
    assert select_best(trials + [trial(4, 83.0, 0.0)]).number == 4
    assert select_best([trial(0, 50.0, None, "pruned")]) is None


def test_the_seed_derives_the_context_templates_as_a_run_s(tiny_setup, tmp_path):
    """docs/protocol.md#seeds: seed 0 keeps the base file's template_seed; another seed's
    derived one is what the trials use and what the written file records."""
    from editprobe.editing.lte.context import run_template_seed
    from editprobe.jobs.tune.search import TuneConfig, Tuner

    def tuner(seed):
        config = TuneConfig(model=str(tiny_setup["model"]), method="memit", data=str(tiny_setup["dev"]),
                            out=tmp_path / f"t{seed}.yaml", n=4, batch_size=2, hparams="tiny", seed=seed,
                            evaluation=(str(tiny_setup["eval"]),), overrides={"mom2_corpus": str(tiny_setup["corpus"])})
        job = Tuner(config)
        job.preflight()
        return job

    base, seeded = tuner(0), tuner(1)
    assert base._seeded() == {}  # the file written at seed 0 is as before
    assert seeded.base.template_seed == run_template_seed(1, base.base.template_seed) != base.base.template_seed
    assert seeded._seeded() == {"template_seed": seeded.base.template_seed}
