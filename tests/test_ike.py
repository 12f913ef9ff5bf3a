"""In-context editing: the memory, retrieval, demonstrations, the prompt transform every probe
asks through, and IKE as a method of a run."""

from __future__ import annotations

import pytest
import torch
from test_runs_helpers import config, workspace

from editprobe.data.loading import load_records
from editprobe.data.records import EditRequest
from editprobe.data.transform import IDENTITY, PromptTransform
from editprobe.editing import make_editor
from editprobe.editing.incontext.ike import IKEEditor, IKEHParams, build_demos
from editprobe.models import load_model
from editprobe.probes import build_negation_plan
from editprobe.probes.negation import score_negation_run
from editprobe.runs import run_experiment

REQUESTS = [
    EditRequest(id="a", subject="Danielle Darrieux", template="The mother tongue of {} is", target="English"),
    EditRequest(id="b", subject="Toko Yasuda", template="{} plays the", target="piano"),
    EditRequest(id="c", subject="Autonomous University of Madrid", template="{}, which is located in",
                target="Sweden"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("ike"))


@pytest.fixture
def asked_queries(monkeypatch) -> list[str]:
    """Every query an in-context transform is asked for, in order."""
    from editprobe.editing.incontext import ike

    asked: list[str] = []
    original = ike.InContextTransform.completions

    def recording(self, queries):
        asked.extend(queries)
        return original(self, queries)

    monkeypatch.setattr(ike.InContextTransform, "completions", recording)
    return asked


@pytest.fixture
def editor(tiny):
    loaded = tiny("llama")
    return make_editor("ike", loaded.model, loaded.tokenizer, {"n_demos": 0}), loaded


def test_tfidf_retrieves_the_fact_about_the_queried_subject(editor):
    ed, _ = editor
    ed.apply(REQUESTS)
    transform = ed.prompt_transform()
    for req in REQUESTS:
        negated = req.template.replace(" is", " is not") if " is" in req.template else "Not " + req.template
        for query in (req.query, negated.format(req.subject)):
            asked = transform.completion(query)
            assert asked.endswith(f"Prompt: {query}")
            assert f"New fact: {req.query} {req.target}\n" in asked
            assert sum(f"{r.query} {r.target}" in asked for r in REQUESTS) == 1  # n_facts: 1
    assert f"{REQUESTS[0].query} English" in transform.chat("Is the mother tongue of Danielle Darrieux English?")


def test_weights_never_change_and_state_round_trips(editor, tmp_path):
    ed, loaded = editor
    before = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    assert ed.prompt_transform() is IDENTITY  # an empty memory asks the plain query
    report = ed.apply(REQUESTS[:2])
    assert [r.id for r in report.requests] == ["a", "b"] and all(0 < r.target_prob <= 1 for r in report.requests)
    ed.apply(REQUESTS[2:])
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())
    assert ed.deltas == {}
    ed.save_state(tmp_path / "state")
    query = REQUESTS[1].query
    asked = ed.prompt_transform().completion(query)
    other = make_editor("ike", loaded.model, loaded.tokenizer, {"n_demos": 0})
    other.load_state(tmp_path / "state")
    assert other.prompt_transform().completion(query) == asked and other._n_edits == 3
    ed.restore()
    assert ed.prompt_transform() is IDENTITY


def test_a_bad_batch_leaves_the_memory_as_it_was(editor):
    ed, _ = editor
    ed.apply(REQUESTS[:1])
    with pytest.raises(Exception):
        ed.apply([REQUESTS[1], {"id": "x", "subject": "Nobody", "template": "{} is", "target": " "}])
    assert ed.facts() == [f"{REQUESTS[0].query} English"]


def test_demonstrations_are_seeded_disjoint_and_cover_both_polarities():
    records = load_records("counterfact-train", limit=200).records
    edited = {records[0].subject.lower(), records[1].subject.lower()}
    demos = build_demos(records, 8, ["copy", "paraphrase", "neighbourhood", "opposite"], seed=0,
                        exclude_subjects=edited)
    assert demos == build_demos(records, 8, ["copy", "paraphrase", "neighbourhood", "opposite"], seed=0,
                                exclude_subjects=edited)
    assert len(demos) == 8 and {d.kind for d in demos} == {"copy", "paraphrase", "neighbourhood", "opposite"}
    assert not any(s in d.fact.lower() for d in demos for s in edited)
    assert any(" not " in d.fact for d in demos) and any(" not " not in d.fact for d in demos)
    by_fact = {r.subject: r for r in records}
    for d in demos:
        if d.kind == "opposite":  # the opposite query is answered with the true object
            assert d.answer == next(r.target_true for s, r in by_fact.items() if s in d.fact)
    assert build_demos(records, 8, ["copy"], seed=1) != build_demos(records, 8, ["copy"], seed=0)


def test_hparams_are_validated():
    with pytest.raises(ValueError):
        IKEHParams(retriever="bm25")
    with pytest.raises(ValueError):
        IKEHParams(demo_kinds=["copy", "swap"])


def test_hidden_state_retriever_finds_each_subject(tiny):
    loaded = tiny("llama")
    ed = make_editor("ike", loaded.model, loaded.tokenizer, {"n_demos": 0, "retriever": "hidden"})
    ed.apply(REQUESTS)
    transform = ed.prompt_transform()
    # The query is a prefix of its own fact: on any model the pooled states are nearest there.
    hits = [f"{r.query} {r.target}" in transform.completion(r.query) for r in REQUESTS]
    assert sum(hits) >= 2 and ed.variant() == "hidden"


class _Prefix(PromptTransform):
    def completion(self, query: str) -> str:
        return "Context. " + query


def test_negation_scoring_asks_through_the_transform_and_keeps_the_query(ws):
    loaded = load_model(str(ws["model"]))
    from editprobe.data.negation import load_negation_table, negate

    table = load_negation_table(str(ws["negations"]))
    plan = build_negation_plan(load_records(str(ws["data"])).records,
                               lambda t, r: negate(t, r, overrides=table))
    plain = score_negation_run(loaded.model, loaded.tokenizer, plan, "positive", decode_extra=None)
    same = score_negation_run(loaded.model, loaded.tokenizer, plan, "positive", decode_extra=None, transform=IDENTITY)
    moved = score_negation_run(loaded.model, loaded.tokenizer, plan, "positive", decode_extra=None,
                               transform=_Prefix())
    assert plain == same
    assert [s.query for s in moved.samples] == [s.query for s in plain.samples]  # samples keep the query
    from editprobe.probes.exact import exact_match_batch

    expected = exact_match_batch(loaded.model, loaded.tokenizer,
                                 [("Context. " + s.query, s.expected) for s in plain.samples])
    assert [s.match for s in moved.samples] == expected


def test_ike_in_a_run_is_measured_through_its_transform(ws, tmp_path, monkeypatch, asked_queries):
    asked = asked_queries
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    loaded = load_model(str(ws["model"]))
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    cfg = config(ws, tmp_path / "out", methods=("ike",), overrides={"n_demos": 0}, probes=("negation", "efficacy"))
    summary = run_experiment(cfg, loaded=loaded, progress=False)
    assert all(torch.equal(weights[k], v) for k, v in loaded.model.state_dict().items())
    row = summary["results"][0]
    assert row["method"] == "ike" and set(row["edit_reports"]) == {"positive", "negative"}
    assert set(row["probes"]["negation"]["metrics"]) >= {"PP", "PN", "NN", "NP", "Avg"}
    samples = [s for s in row["probes"]["negation"]["details"]["counts"]]
    assert samples == ["PP", "PN", "NN", "NP"]
    # Every query of both edited states went through the transform (the baseline's did not).
    queries = {q for q in asked}
    records = load_records(str(ws["data"])).records
    assert {r.query for r in records} <= queries
    assert len(asked) >= 4 * len(records) + len(records)  # PP, PN, NN, NP and efficacy


def test_the_edit_job_measures_an_in_context_editor_through_its_prompt(ws, tmp_path, asked_queries):
    from editprobe.jobs.edit import EditConfig, EditJob

    seen = asked_queries
    loaded = load_model(str(ws["model"]))
    job = EditJob(EditConfig.build(dict(model=str(ws["model"]), method="ike", data=str(ws["data"]), n=3,
                                        batch_size=3, out=tmp_path / "out", hparams="tiny",
                                        overrides={"n_demos": 0})), loaded=loaded)
    job.preflight()
    report = job.run()
    records = load_records(str(ws["data"])).records[:3]
    # once for the batch's own report, once more for efficacy after editing
    assert seen == [r.query for r in records] * 2
    assert report["method"] == "ike" and report["n"] == 3


def test_demonstrations_follow_the_run_seed():
    """A run's seed (edit's, tune's) derives IKE's ``seed`` (docs/protocol.md#seeds); seed 0 keeps the file's."""
    from editprobe.runs.plan import MethodPlan

    records = load_records("counterfact-train", limit=200).records
    own = IKEHParams(seed=5)
    plans = {seed: MethodPlan("ike", None, own, IKEEditor).with_run_seed(seed) for seed in (0, 1, 2)}
    assert plans[0].hparams == own  # the demonstrations of every run made before
    demos = {seed: tuple(build_demos(records, 8, list(own.demo_kinds), p.hparams.seed)) for seed, p in plans.items()}
    assert len(set(demos.values())) == 3 and all(len(d) == 8 for d in demos.values())
