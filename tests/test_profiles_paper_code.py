"""The `paper-code` profile beside `paper` (docs/profiles.md): both load for both 7-8B models
through the path a run takes, every value of `paper-code` names its source, and the docs
table of their differences is exactly the set of fields where the two profiles differ,
with the values the files hold (a field that differs without a row fails, and so does a row
whose field no longer differs or whose value is not the file's)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from editprobe.editing import lte_methods, resolve_hparams
from editprobe.editing.settings.hparams import HParamsError
from editprobe.editing.settings.profiles import PROFILES_DIR, Profile, available_profiles, choose_hparams, load_profile
from editprobe.runs import RunConfig

DOC = Path(__file__).resolve().parents[1] / "docs" / "profiles.md"
TABLE_HEADING = "### Where `paper` and `paper-code` differ"
MODELS = {"meta-llama/Meta-Llama-3-8B-Instruct": "llama3-8b-instruct", "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b-instruct"}
PROFILES = ("paper", "paper-code")
FE_PIN = "jugechengzi/FE@2e25dbd"
WHOLE_METHOD = "(whole method)"
# Profile fields that describe it rather than set anything a run uses.
PROFILE_DESCRIPTIONS = {"name", "description", "source", "not_covered"}


def _plain(value):
    """Tuples as lists, so a YAML value from the docs compares with a validated field."""
    return json.loads(json.dumps(value))


def _first_code(cell: str):
    found = re.search(r"`([^`]*)`", cell)
    assert found, f"no `value` in the table cell {cell!r}"
    return _plain(yaml.safe_load(found.group(1)))


def _table() -> dict[tuple[str, str, str], tuple]:
    """(method, model key, field) -> (paper value, paper-code value) from docs/profiles.md."""
    text = DOC.read_text(encoding="utf-8")
    assert TABLE_HEADING in text, f"docs/profiles.md has no {TABLE_HEADING!r} section"
    section = text.split(TABLE_HEADING, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, separator
    assert rows, "the differences table is empty"
    table = {}
    for line in rows:
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert len(cells) == 6, f"a table row needs 6 cells: {line}"
        method, model, field, paper, code, why = cells
        assert why, f"the row of {field} does not say why the profiles differ"
        method, field = method.strip("`"), field.strip("`")
        keys = list(MODELS.values()) if model == "both" else [model]
        assert set(keys) <= set(MODELS.values()), f"unknown model {model!r} in the table"
        values = (None, None) if field == WHOLE_METHOD else (_first_code(paper), _first_code(code))
        for key in keys:
            assert (method, key, field) not in table, f"two rows for {method} {key} {field}"
            table[(method, key, field)] = values
    return table


def _resolved(profile: str, method: str, model: str) -> dict | None:
    """The hyperparameters a run of ``method`` on ``model`` under ``profile`` reads; None for a
    method the profile leaves out on purpose."""
    try:
        choice = choose_hparams(method, model, profile=profile)
    except HParamsError:
        if method in load_profile(profile).not_covered:
            return None
        raise
    assert choice.chosen_by == f"profile {profile}"
    return _plain(resolve_hparams(method, choice.path).model_dump(exclude={"source"}))


def _differences() -> dict[tuple[str, str, str], tuple]:
    diffs = {}
    for method in lte_methods():
        for model, key in MODELS.items():
            paper, code = (_resolved(p, method, model) for p in PROFILES)
            if paper is None or code is None:
                diffs[(method, key, WHOLE_METHOD)] = (None, None)
                continue
            diffs.update({(method, key, f): (paper[f], code[f]) for f in paper if paper[f] != code[f]})
    profiles = [load_profile(p).model_dump(exclude=PROFILE_DESCRIPTIONS) for p in PROFILES]
    for field in profiles[0]:
        if profiles[0][field] != profiles[1][field]:
            for key in MODELS.values():
                diffs[("profile", key, field)] = (profiles[0][field], profiles[1][field])
    return diffs


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("method", sorted(lte_methods()))
def test_both_profiles_load_for_both_models(method, model, profile):
    if profile == "paper-code" and method == "rome":
        with pytest.raises(HParamsError, match=r"paper's code has no ROME .*run --method emmet --batch-size 1"):
            choose_hparams(method, model, profile=profile)
        return
    hp = _resolved(profile, method, model)
    assert hp["method"] == method
    source = resolve_hparams(method, choose_hparams(method, model, profile=profile).path).source
    assert source.startswith(FE_PIN) if profile == "paper-code" else source
    if method != "rome":
        assert hp["layers"] == [4, 5, 6, 7, 8] and hp["v_num_grad_steps"] == 25 and hp["preserve_previous"]


def test_every_difference_is_a_row_of_the_docs_table_and_every_row_a_difference():
    table, diffs = _table(), _differences()
    missing = sorted(set(diffs) - set(table))
    stale = sorted(set(table) - set(diffs))
    assert not missing, f"fields where the profiles differ without a row in docs/profiles.md: {missing}"
    assert not stale, f"rows of docs/profiles.md whose field does not differ: {stale}"
    wrong = {k: (table[k], diffs[k]) for k in diffs if table[k] != diffs[k]}
    assert not wrong, f"rows whose (paper, paper-code) values are not the files' (table, files): {wrong}"


def test_the_profiles_run_float32_and_bfloat16():
    assert {"paper", "paper-code"} <= set(available_profiles())
    assert (load_profile("paper").dtype, load_profile("paper-code").dtype) == ("float32", "bfloat16")
    assert RunConfig.build({"profile": "paper-code"}).dtype == "bfloat16"
    assert RunConfig.build({"profile": "paper-code", "dtype": "float32"}).dtype == "float32"


def test_every_paper_code_value_names_its_source_in_the_fe_repository():
    """Each `field: value` line of paper-code cites an FE file (or function) in its comment."""
    fe_path = re.compile(r"#.*\b(configs|algs|util|locate_edit_utils)/[\w./{},*-]+")
    files = sorted((PROFILES_DIR / "paper-code").rglob("*.yaml"))
    assert len(files) == 1 + (len(lte_methods()) - 1) * len(MODELS)  # profile.yaml; no rome
    for path in files:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            field = re.match(r"([A-Za-z_0-9]+):\s*\S", line)
            if field and field.group(1) not in ("method", "source", "description", "not_covered"):
                assert fe_path.search(line), f"{path.relative_to(PROFILES_DIR)}:{n}: no FE source for {line!r}"


def test_a_profile_names_why_it_leaves_a_method_out():
    assert Profile.model_validate({"name": "x", "description": "d", "source": "s"}).not_covered == {}
    assert "emmet" in load_profile("paper-code").not_covered["rome"]
    assert load_profile("paper").not_covered == {}
