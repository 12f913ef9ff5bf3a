"""RunConfig: defaults of the paper, YAML with flags on top, one clear error per bad field."""

from __future__ import annotations

import pytest

from editprobe.runs import RunConfig, RunConfigError, dataset_key
from editprobe.runs.loop import batch_seed


def test_paper_defaults():
    c = RunConfig()
    assert (c.n, c.batch_size, c.eval) == (2000, 100, "final")
    assert c.hparams_overrides() == {}


def test_yaml_with_flags_on_top(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny\nmethods: [memit, alphaedit]\nn: 10\nout: runs/x\noverrides: {v_lr: 0.1}\n")
    c = RunConfig.from_yaml(path, n=4, seed=None, preserve_previous=False)
    assert c.methods == ("memit", "alphaedit") and c.n == 4 and c.seed == 0
    assert c.hparams_overrides() == {"v_lr": 0.1, "preserve_previous": False}
    assert "out" not in c.identity()
    # How often to checkpoint does not change results: a resume may choose another value.
    assert "checkpoint_every" not in c.identity()


@pytest.mark.parametrize("fields, field", [
    ({"n": 0}, "'n'"), ({"batch_size": -1}, "'batch_size'"), ({"checkpoint_every": 0}, "'checkpoint_every'"), ({"methods": []}, "'methods'"),
    ({"methods": ["memit", "memit"]}, "'methods'"), ({"eval": "every-batch"}, "'eval'"), ({"nope": 1}, "'nope'"),
    ({"datasets": ["a/mcf.json", "a/../a/mcf.json"]}, "name the same dataset file"),
    ({"factcheck": {"statement_template": "{query}"}}, "factcheck.statement_template"),
])
def test_bad_fields_name_the_field(fields, field):
    with pytest.raises(RunConfigError, match=field):
        RunConfig.build(fields)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(RunConfigError, match="mapping"):
        RunConfig.from_yaml(path)


def test_dataset_key():
    assert dataset_key("data/mcf_2000.json") == "mcf_2000"
    assert dataset_key("counterfact-sample") == "counterfact-sample"


def test_batch_seed_is_stable_and_distinct():
    # Pinned values: the same in every process (no per-process hash salt) and in every version,
    # so a run resumed later draws the batches it would have drawn.
    assert batch_seed(0, "cf__memit__positive", 1) == 1393092705
    assert batch_seed(1, "cf__memit__negative", 0) == 3626727504
    assert batch_seed(0, "a", 0) == 3002079388
    seeds = {batch_seed(s, st, b) for s in (0, 1) for st in ("a", "b") for b in range(3)}
    assert len(seeds) == 12


def test_factcheck_wording_is_part_of_the_run_identity():
    default = RunConfig()
    assert default.factcheck.statement_template == "{query} {target}"  # docs/protocol.md#fact-checking: no full stop
    dotted = RunConfig.build({"factcheck": {"statement_template": "{query} {target}."}})
    assert dotted.factcheck.statement_template == "{query} {target}."
    assert dotted.identity() != default.identity()  # --resume refuses to mix wordings


def test_dataset_keys_are_slugs_and_one_stem_in_two_folders_is_told_apart(tmp_path):
    from editprobe.runs.config import dataset_key, dataset_keys

    assert dataset_key("counterfact-sample") == "counterfact-sample"
    assert dataset_key("data/facts") == "facts" and dataset_key("/x/y/mcf.json") == "mcf"
    assert dataset_key("my data/été 1.json") == "t-1"
    assert dataset_key("..") == "data" and "/" not in dataset_key("../..")
    keys = dataset_keys(["a/mcf.json", "b/mcf.json", "zsre.json"])
    assert keys["zsre.json"] == "zsre" and keys["a/mcf.json"] != keys["b/mcf.json"]
    assert all(k.startswith("mcf-") and len(k) == len("mcf-") + 8 for k in (keys["a/mcf.json"], keys["b/mcf.json"]))
    assert dataset_keys(["a/mcf.json"]) == {"a/mcf.json": "mcf"}  # unique: the plain stem, as before
    config = RunConfig(datasets=("a/mcf.json", "b/mcf.json"))  # allowed now: their results are keyed apart
    assert len(set(config.dataset_keys().values())) == 2
