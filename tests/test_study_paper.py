"""studies/paper.yaml is the paper's grid: each run and what it edits, checked on files of the
right shape written here (the real files are not shipped), without a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from editprobe.data import load_records
from editprobe.data.options import DatasetOptions
from editprobe.editing.settings.profiles import choose_hparams
from editprobe.runs.config import dataset_key
from editprobe.runs.preflight import check_datasets
from editprobe.studies.study import expand, load_study

REPO = Path(__file__).resolve().parents[1]
LLAMA, QWEN = "meta-llama/Meta-Llama-3-8B-Instruct", "Qwen/Qwen2.5-7B-Instruct"
BASELINES = {"memit", "emmet", "alphaedit", "rect", "prune", "pmet", "adaedit", "namet", "memit_lti"}
WCF = "data/wiki_counterfact/test_cf.json+data/wiki_counterfact/train_cf.json"


def _counterfact(n: int) -> list[dict]:
    return [{"case_id": i, "requested_rewrite": {"prompt": "The mother tongue of {} is", "subject": f"Person {i}",
                                                 "relation_id": "P103", "target_new": {"str": "English"},
                                                 "target_true": {"str": "French"}},
             "paraphrase_prompts": [], "neighborhood_prompts": []} for i in range(n)]


def _zsre(n: int) -> list[dict]:
    return [{"subject": f"Thing {i}", "src": f"What is the capital of Thing {i}?", "alt": "Paris", "answers": ["Rome"],
             "rephrase": f"Which city is the capital of Thing {i}?", "loc": "nq question: who", "loc_ans": "x"}
            for i in range(n)]


def _knowedit(n: int, start: int) -> list[dict]:
    return [{"subject": f"Place {start + i}", "prompt": f"The name of the country of Place {start + i} is",
             "target_new": "Syria", "ground_truth": ["France"], "rephrase": f"Place {start + i} is in"}
            for i in range(n)]


def _mquake(n_cases: int) -> list[dict]:
    """Cases of 3 rewrites; the third repeats the first (an exact duplicate, kept once)."""
    cases = []
    for c in range(n_cases):
        rewrites = [{"prompt": "{} is a citizen of", "subject": f"Citizen {c}-{j}", "relation_id": "P27",
                     "target_new": {"str": "Canada"}, "target_true": {"str": "Mexico"}} for j in range(2)]
        cases.append({"case_id": c, "requested_rewrite": rewrites + [dict(rewrites[0])],
                      "questions": ["Where?"], "new_answer": "Canada", "new_answer_alias": []})
    return cases


@pytest.fixture
def grid_data(tmp_path, monkeypatch):
    """The study's data paths (relative to the working directory), in the upstream shapes:
    KnowEdit's WCF test and train splits of 839 and 1427 records as in the shared copies."""
    files = {"data/multi_counterfact.json": _counterfact(2100), "data/zsre_mend_eval.json": _zsre(2100),
             "data/MQuAKE-CF.json": _mquake(1100), "data/wiki_counterfact/test_cf.json": _knowedit(839, 0),
             "data/wiki_counterfact/train_cf.json": _knowedit(1427, 839)}
    for rel, records in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _runs(study: str, out: Path):
    return expand(load_study(REPO / "studies" / study), out, study)


def test_the_grid_is_the_papers(grid_data):
    runs = _runs("paper.yaml", grid_data / "out")
    assert len(runs) == 2 * 9 * 4 + 8 + 2
    assert all(r.config.profile == "paper" and r.config.n == 2000 and r.config.batch_size == 100 for r in runs)
    assert not any("rome" in r.config.methods for r in runs)  # ROME is not in the paper's grid
    with_kp = [r for r in runs if r.config.preserve_previous is True]
    assert {(r.config.model, r.config.methods[0]) for r in with_kp} == {(m, x) for m in (LLAMA, QWEN) for x in BASELINES}
    table6 = [r for r in runs if r.config.preserve_previous is False]
    assert {r.config.methods[0] for r in table6} == BASELINES - {"alphaedit"}
    assert {(r.config.model, r.config.datasets) for r in table6} == {(LLAMA, ("data/multi_counterfact.json",))}
    rledit = [r for r in runs if r.config.methods == ("rledit",)]
    assert {(r.config.model, r.config.datasets[0], r.config.overrides["hypernet"]) for r in rledit} == {
        (LLAMA, "data/multi_counterfact.json", "trained/rledit-llama3-mcf/hypernet"),
        (LLAMA, "data/zsre_mend_eval.json", "trained/rledit-llama3-zsre/hypernet")}
    assert all(r.config.zsre_target == "answers" for r in runs)


def test_wcf_and_mquake_are_2000_edits_each(grid_data):
    runs = {r.config.datasets[0]: r.config for r in _runs("paper.yaml", grid_data / "out")
            if r.config.preserve_previous is True and r.config.methods == ("memit",) and r.config.model == LLAMA}
    wcf, mquake = runs[WCF], runs["data/MQuAKE-CF.json"]
    records, _ = check_datasets(wcf.datasets, wcf.n, options=wcf.dataset_options())
    edited = records[WCF]
    assert len(edited) == 2000 and len({r.id for r in edited}) == 2000
    assert edited[0].subject == "Place 0" and edited[839].subject == "Place 839"  # test split first, then train
    assert dataset_key(WCF) == "test_cf+train_cf"
    records, _ = check_datasets(mquake.datasets, mquake.n, options=mquake.dataset_options())
    rewrites = records["data/MQuAKE-CF.json"]
    assert len(rewrites) == 2000  # single rewrites: 1000 cases' two distinct rewrites (duplicates kept once)
    assert len({(r.subject, r.target_new) for r in rewrites}) == 2000
    assert all(r.case_id is None and not r.portability for r in rewrites)  # no multi-hop questions that way
    by_case = load_records("data/MQuAKE-CF.json", limit=10).records
    assert len(by_case) == 30 and by_case[0].case_id == "0"  # mquake_unit: case, the default, keeps cases whole


def test_every_run_of_both_paper_studies_has_its_profile_file(grid_data):
    for study in ("paper.yaml", "paper-files.yaml"):
        for run in _runs(study, grid_data / "out"):
            for method in run.config.methods:
                for spec in run.config.datasets:
                    choice = choose_hparams(method, run.config.model, run.config.hparams, run.config.profile,
                                            dataset=spec)
                    assert choice.chosen_by == "profile paper", (study, method, run.config.model)


def test_the_paper_files_study_runs_the_same_grid_on_the_papers_records(grid_data):
    grid = [(r.config.model, r.config.methods, r.config.preserve_previous) for r in _runs("paper.yaml", grid_data / "o")]
    files = _runs("paper-files.yaml", grid_data / "o2")
    assert sorted(grid) == sorted((r.config.model, r.config.methods, r.config.preserve_previous) for r in files)
    assert all(d.startswith("data/paper/") for r in files for d in r.config.datasets)


def test_joined_files_keep_ids_unique_and_count_across(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_counterfact(3)))
    b.write_text(json.dumps(_counterfact(3)))  # the same ids 0-2
    loaded = load_records(f"{a}+{b}", limit=5)
    assert [r.id for r in loaded.records] == ["a/0", "a/1", "a/2", "b/0", "b/1"]
    alone = load_records(f"{a}+{tmp_path / 'zsre.json'}", limit=2)  # the second file is never reached
    assert len(alone.records) == 2
    with pytest.raises(Exception, match="zsre.json"):
        load_records(f"{a}+{tmp_path / 'zsre.json'}")


def test_single_rewrites_in_file_order_without_duplicates(tmp_path):
    path = tmp_path / "mq.json"
    path.write_text(json.dumps(_mquake(3)))
    records = load_records(path, limit=5, options=DatasetOptions(mquake_unit="rewrite")).records
    assert [r.subject for r in records] == ["Citizen 0-0", "Citizen 0-1", "Citizen 1-0", "Citizen 1-1", "Citizen 2-0"]
