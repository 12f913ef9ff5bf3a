"""YAML input within limits (yamlio.py) and error lines of bounded length: a "billion laughs"
file as a run config, study file, hparams file, negation table or --set value is one short
line in milliseconds, with little memory; a file over the size cap likewise; normal anchors
and merge keys still work; a long value echoed in a message is cut (the harness:
failure_harness.py)."""

from __future__ import annotations

import json
import time
import tracemalloc

import pytest
import yaml
from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, edit_args, hparams_file, parametrize, run_args, write, ws)

from editprobe.errors import LINE_LIMIT, one_line, quoted
from editprobe.yamlio import MAX_BYTES, YAMLInputError, load_yaml, parse_yaml


def laughs(levels: int = 9, width: int = 10, flow: bool = False) -> str:
    """The classic "billion laughs": ``width ** levels`` strings from a few hundred bytes."""
    lines = [f'l0: &l0 "lol"'] + [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels + 1)]
    if flow:  # one line, for --set
        return "{" + ", ".join(lines) + "}"
    return "\n".join(lines) + "\n"


# Where each reader meets the document (a mapping of lol lists at the top, or under a key
# whose value the old messages echoed).
BOMB = laughs()
BOMB_OVERRIDES = BOMB + "overrides: {v_lr: *l9}\n"
EXPAND_LIMIT = "aliases expand it past"

CASES = [
    Case("yaml-bomb-run-config",
         lambda ws, t: ["run", "--config", str(write(t / "run.yaml", BOMB_OVERRIDES)), "--out", str(t / "out")],
         ("run.yaml", EXPAND_LIMIT)),
    Case("yaml-bomb-study-file",
         lambda ws, t: ["study", str(write(t / "study.yaml", BOMB + "runs: [{model: x, v_lr: *l9}]\n")),
                        "--out", str(t / "out")],
         ("study.yaml", EXPAND_LIMIT)),
    Case("yaml-bomb-hparams-file",
         lambda ws, t: edit_args(ws, t / "out", "--hparams", str(hparams_file(t, BOMB + "v_lr: *l9\n"))),
         ("hp.yaml", EXPAND_LIMIT)),
    Case("yaml-bomb-negation-table",
         lambda ws, t: [*run_args(ws, t / "out"), "--negation-table", str(write(t / "neg.yaml", BOMB))],
         ("neg.yaml", EXPAND_LIMIT)),
    # 1.1 M nodes: over the limit, and small enough that the old loader's echo stays finite
    Case("yaml-bomb-set-value", lambda ws, t: edit_args(ws, t / "out", "--set", f"v_lr={laughs(6, flow=True)}"),
         ("--set v_lr", EXPAND_LIMIT)),
    Case("yaml-run-config-over-the-size-cap",
         lambda ws, t: ["run", "--config", str(write(t / "run.yaml", b"#" * (MAX_BYTES + 1))), "--out", str(t / "out")],
         ("run.yaml", "larger than 4,194,304 bytes")),
    Case("yaml-hparams-recursive-alias",
         lambda ws, t: edit_args(ws, t / "out", "--hparams", str(hparams_file(t, "layers: &a [1, *a]\n"))),
         ("hp.yaml", "recursive alias")),
    Case("yaml-hparams-not-utf8",
         lambda ws, t: edit_args(ws, t / "out", "--hparams", str(write(t / "hp.yaml", b"v_lr: \xff\n"))),
         ("hp.yaml", "not UTF-8")),
    Case("set-long-value-is-cut",
         lambda ws, t: edit_args(ws, t / "out", "--set", "v_lr=" + "x" * 100_000),
         ("--set v_lr='xxx", "…(100,000 characters)", "number")),
]


@parametrize(CASES)
def test_yaml_input(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", [c for c in CASES if c.id.startswith("yaml-bomb")], ids=lambda c: c.id)
def test_a_bomb_is_refused_in_milliseconds_with_little_memory(case: Case, ws, tmp_path):
    invoke(case.args(ws, tmp_path / "warm"))  # imports and caches of the command, not measured
    args = case.args(ws, tmp_path)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        result = invoke(args)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.exit_code == 2, result.output
    line = result.error_lines[0]
    assert len(line) < 500 and EXPAND_LIMIT in line, line
    assert elapsed < 1.0, elapsed
    assert peak < 16 * 2**20, f"{peak:,} bytes"


def test_the_loader_refuses_a_billion_laughs_before_building_it():
    started = time.perf_counter()
    with pytest.raises(YAMLInputError, match=EXPAND_LIMIT):
        parse_yaml(laughs(levels=30))  # 10**30 strings
    assert time.perf_counter() - started < 0.5


def test_the_loader_refuses_endless_input_and_deep_nesting():
    with pytest.raises(YAMLInputError, match="larger than 4,194,304 bytes"):
        load_yaml("/dev/zero")  # reads no more than the cap
    with pytest.raises(YAMLInputError, match="nested too deeply"):
        parse_yaml("[" * 100_000)
    with pytest.raises(YAMLInputError, match="recursive alias"):
        parse_yaml("a: &a {b: *a}")


def test_anchors_aliases_and_merge_keys_still_load(ws, tmp_path):
    text = ("base: &base {v_lr: 0.5, clamp_norm_factor: 4}\n"
            "tuned:\n  <<: *base\n  v_lr: 0.25\n"
            "layers: &layers [1, 2]\nsame: *layers\n")
    assert parse_yaml(text) == yaml.safe_load(text)
    assert parse_yaml(text)["tuned"] == {"v_lr": 0.25, "clamp_norm_factor": 4}
    # through a reader: an hparams file that merges its settings in and repeats an anchored group
    hp = hparams_file(tmp_path, "<<: {method: memit, v_lr: 0.5, v_num_grad_steps: 25, v_weight_decay: 0.5,\n"
                                "     clamp_norm_factor: 4.0, kl_factor: 0.0625, mom2_update_weight: 100.0}\n"
                                "layers: [1, 2]\nmom2_n_samples: 100\nmom2_max_len: 64\n"
                                "template_groups: [&group [5, 5], *group]\n")
    result = invoke(edit_args(ws, tmp_path / "out", "--hparams", str(hp)))
    assert result.exit_code == 0, result.output
    hparams = json.loads((tmp_path / "out" / "report.json").read_text())["hparams"]
    assert hparams["template_groups"] == [[5, 5], [5, 5]] and hparams["v_lr"] == 0.5


def test_error_and_warning_lines_are_capped():
    line = one_line("x" * 58_000_000)
    assert len(line) <= LINE_LIMIT and "…(58,000,000 characters)…" in line
    assert quoted("y" * 10_000).endswith("…(10,000 characters)") and len(quoted("y" * 10_000)) < 250
    assert quoted("short") == "'short'"
