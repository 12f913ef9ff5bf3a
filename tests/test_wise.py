"""The ``wise`` editor (side memory + router, docs/wise.md) on the trained tiny model: routing
checked by hand against the activation norms, TIES merging against a hand computation,
sharding and merging in the editor, weights never written, a failed batch changes nothing,
save -> load -> identical next batch, a batched query routes as it would alone, the
irrelevant prompts' disjointness, and a run beside MEMIT, killed and resumed."""

from __future__ import annotations

import copy
import json
import signal

import pytest
import torch
from test_engine_helpers import all_weights, fresh, random_edits
from test_runs_helpers import cli_run, comparable, config, subprocess_env, workspace

from editprobe.data.transform import IDENTITY
from editprobe.editing import METHODS, lte_methods, make_editor, resolve_hparams
from editprobe.editing.memory.wise import WISEDataError, WISEEditor, WISESettings
from editprobe.editing.memory.wise_memory import ties_merge
from editprobe.editing.prompts import RequestError
from editprobe.editing.settings.hparams import HParamsError, available
from editprobe.models.tokens import continuation_ids, encode_open
from editprobe.probes.scoring import score_and_decode
from editprobe.runs import read_samples, read_summary, run_experiment


def _own():
    """A copy of the session's tiny model (fresh() hands out one shared model: the router's
    hooks must not stay on it)."""
    return copy.deepcopy(fresh("llama"))


def _editor(lm, **overrides) -> WISEEditor:
    return make_editor("wise", lm.model, lm.tokenizer, "tiny", overrides=overrides)


def _ids(lm, text: str) -> torch.Tensor:
    return torch.tensor([encode_open(lm.tokenizer, text)])


@pytest.fixture(scope="module")
def edited():
    lm = _own()
    before = all_weights(lm.model)
    editor = _editor(lm)
    requests = random_edits(3, seed=0)
    editor.apply(requests)
    yield lm, editor, requests, before
    editor.restore()


# --- the method --------------------------------------------------------------------------------

def test_wise_is_a_registered_editor_outside_the_weights():
    assert METHODS["wise"] is WISEEditor and "wise" not in lte_methods()
    assert not WISEEditor.edit_in_weights and WISEEditor.edit_stages == ("positive", "negative")
    for key in available("wise"):  # every shipped file validates and cites its source
        hp = resolve_hparams("wise", key)
        assert hp.method == "wise" and hp.source and hp.layer is not None, key
    with pytest.raises(HParamsError, match="multiple of save_freq"):
        resolve_hparams("wise", {"save_freq": 3, "merge_freq": 4})
    with pytest.raises(HParamsError, match="'mask_ratio'"):
        resolve_hparams("wise", {"mask_ratio": 0})
    with pytest.raises(ValueError, match="layer 9"):
        WISESettings(layer=9).check_model(4)


def test_weights_stay_untouched_and_restore_removes_the_router(edited):
    lm, editor, requests, before = edited
    assert all(torch.equal(w, before[k]) for k, w in all_weights(lm.model).items())
    assert editor.deltas == {} and editor.prompt_transform() is IDENTITY
    ids = _ids(lm, requests[0].query)
    edited_logits = lm.model(input_ids=ids).logits
    unedited = fresh("llama").model(input_ids=ids).logits
    assert not torch.equal(edited_logits, unedited)  # the edit is in the forward
    twin_lm = _own()
    twin = _editor(twin_lm)
    twin.apply(requests)
    twin.restore()
    assert torch.equal(twin_lm.model(input_ids=ids).logits, unedited)
    assert twin.memory_summary() == [] and not twin.module._forward_hooks


# --- routing -----------------------------------------------------------------------------------

def _hand_routes(lm, editor, text: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(Δ per token by hand, the threshold, the router's choice) for one text."""
    seen = {}
    handle = editor.module.register_forward_pre_hook(lambda _m, args: seen.setdefault("a", args[0].detach()))
    try:
        lm.model(input_ids=_ids(lm, text))
    finally:
        handle.remove()
    (memory,) = editor.router.memories
    a = seen["a"][0].float()
    delta = ((memory.weight - editor.main) @ a.T).T.norm(dim=-1)  # ‖(W_side − W_v) a‖ per token
    return delta, torch.tensor(memory.threshold(editor.hp.act_ratio)), editor.router.last_routes[0]


def test_an_edit_prompt_routes_to_the_side_memory_and_an_unrelated_one_to_the_main(edited):
    lm, editor, requests, _ = edited
    statement = requests[0].query
    delta, threshold, routes = _hand_routes(lm, editor, statement)
    assert torch.equal(routes, torch.where(delta > threshold, 0, -1))  # the router's rule, by hand
    assert routes[-1] == 0 and delta[-1] > threshold  # the token that predicts the target
    unrelated = editor.pool()[-1][3]
    delta, threshold, routes = _hand_routes(lm, editor, unrelated)
    assert torch.equal(routes, torch.where(delta > threshold, 0, -1))
    # unrelated statements' last tokens mostly stay on the main memory (24 % routed on this model)
    last = []
    for _, _, _, text in editor.pool()[:100]:
        lm.model(input_ids=_ids(lm, text))
        last.append(int(editor.router.last_routes[0, -1] >= 0))
    assert sum(last) < 40


def test_a_batched_padded_query_routes_and_scores_as_it_would_alone(edited):
    lm, editor, requests, _ = edited
    tok = lm.tokenizer
    queries = [r.query for r in requests] + ["The mother tongue of Danielle Darrieux is", editor.pool()[0][2]]
    prompts = [encode_open(tok, q) for q in queries]
    conts = [[continuation_ids(tok, q, " Paris")] for q in queries]
    together, decoded = score_and_decode(lm.model, tok, prompts, conts, decode=[3] * len(queries))
    for i in range(len(queries)):
        alone, one = score_and_decode(lm.model, tok, [prompts[i]], [conts[i]], decode=[3])
        assert together[i][0].predicted == alone[0][0].predicted and decoded[i] == one[0]
        assert together[i][0].logprobs == pytest.approx(alone[0][0].logprobs, abs=1e-4)
    # right-padded teacher forcing (probes/scoring.py's plain path): each row routes as alone
    rows = [p + c[0][:-1] for p, c in zip(prompts, conts)]
    width = max(map(len, rows))
    ids = torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    batched = lm.model(input_ids=ids, attention_mask=mask).logits
    routes = editor.router.last_routes.clone()
    for i, r in enumerate(rows):
        alone = lm.model(input_ids=torch.tensor([r])).logits[0]
        assert torch.equal(editor.router.last_routes[0], routes[i, : len(r)])
        assert torch.allclose(batched[i, : len(r)], alone, atol=1e-4)


# --- merging -----------------------------------------------------------------------------------

def test_ties_merge_equals_a_hand_computation():
    base = torch.zeros(2, 3)
    shards = [torch.tensor([[3.0, -1.0, 0.5], [0.0, 2.0, -4.0]]),
              torch.tensor([[1.0, 2.0, -0.2], [1.0, -3.0, -1.0]])]
    # density 0.5: keep the 3 largest |τ| of each: shard 0 {3, 2, -4}, shard 1 {2, -3, 1 or 1}
    # (topk keeps the first of equal magnitudes it meets; here |1.0| at (0,0) and (1,0) and (1,2))
    got = ties_merge(base, shards, [0.5, 0.5], density=0.5)
    t0 = torch.tensor([[3.0, 0, 0], [0, 2.0, -4.0]])
    k1 = torch.zeros(6)
    k1[torch.tensor([[1.0, 2.0, -0.2], [1.0, -3.0, -1.0]]).abs().flatten().topk(3).indices] = 1
    t1 = torch.tensor([[1.0, 2.0, -0.2], [1.0, -3.0, -1.0]]) * k1.view(2, 3)
    expected = torch.zeros(2, 3)
    for i in range(2):
        for j in range(3):
            s = 0.5 * t0[i, j] + 0.5 * t1[i, j]
            sign = 1.0 if s >= 0 else -1.0
            agree = [(0.5, t[i, j]) for t in (t0, t1) if torch.sign(t[i, j]) == sign]
            expected[i, j] = sum(w * v for w, v in agree) / (sum(w for w, _ in agree) or 1)
    assert torch.allclose(got, expected)
    assert torch.equal(ties_merge(base, shards[:1], [1.0], density=1.0), shards[0])  # one shard, no trim: itself


def test_shards_close_every_save_freq_edits_and_merge_every_merge_freq():
    editor = _editor(_own(), save_freq=2, merge_freq=4, n_iter=3)
    requests = random_edits(8, seed=1)
    editor.apply(requests[:2])
    assert [m["merged"] for m in editor.memory_summary()] == [False] and editor.current is None
    editor.apply(requests[2:3])
    assert [(m["n_edits"], m["merged"]) for m in editor.memory_summary()] == [(2, False), (1, False)]
    first_min = editor.memories[0].min_act
    editor.apply(requests[3:4])  # the second shard closes: 4 edits since the last merge
    (merged,) = editor.memories
    assert merged.merged and merged.n_edits == 4 and editor.merges == 1 and editor.current is None
    assert merged.min_act <= first_min  # the least of its shards' (EasyEdit: min over the merged)
    editor.apply(requests[4:8])  # retrieve: a second merge is kept beside the first
    assert [(m.n_edits, m.merged) for m in editor.memories] == [(4, True), (4, True)]
    folded = _editor(_own(), save_freq=2, merge_freq=4, n_iter=3, retrieve=False)
    for part in (requests[:4], requests[4:8]):
        folded.apply(part)
    assert [(m.n_edits, m.merged) for m in folded.memories] == [(8, True)] and folded.variant() == "merge"


def test_a_sequential_batch_trains_as_batches_of_one_and_a_joint_one_does_not():
    """The paper's protocol (``sequential``, the default): each request of a batch trains the
    shard alone, in order, exactly as that many batches of one would; the joint objective
    averages the batch's losses into one training and gives other memories."""
    requests = random_edits(3, seed=4)

    def memories(batches, **overrides):
        lm = _own()
        editor = _editor(lm, **overrides)
        for batch in batches:
            editor.apply(batch)
        return [m.weight for m in editor._consulted()]

    together = memories([requests])
    one_by_one = memories([[r] for r in requests])
    assert len(together) == len(one_by_one) and all(torch.equal(a, b) for a, b in zip(together, one_by_one))
    joint = memories([requests], sequential=False)
    assert not torch.equal(joint[0], together[0])


# --- state -------------------------------------------------------------------------------------

def test_a_failed_batch_changes_nothing(edited):
    lm, editor, requests, _ = edited
    before = (list(editor.memories), editor.current, editor.batches, editor.shards)
    bad = random_edits(2, seed=5)
    bad[1] = bad[1].model_copy(update={"target": " "})
    with pytest.raises(RequestError):
        editor.apply(bad)
    assert (list(editor.memories), editor.current, editor.batches, editor.shards) == before
    assert editor.router.memories == editor._consulted()


def test_save_load_gives_the_identical_next_batch(tmp_path):
    first, second = random_edits(3, seed=2), random_edits(3, seed=3, prefix="s")
    a = _editor(_own(), save_freq=3, merge_freq=6)
    a.apply(first)
    a.save_state(tmp_path / "state")
    report_a = a.apply(second)
    b = _editor(_own(), save_freq=3, merge_freq=6)
    b.load_state(tmp_path / "state")
    report_b = b.apply(second)
    assert report_a.requests == report_b.requests
    assert len(a.memories) == len(b.memories) == 1 and a.memories[0].merged
    assert all(torch.equal(x.weight, y.weight) and x.min_act == y.min_act for x, y in zip(a.memories, b.memories))
    ids = torch.tensor([encode_open(a.tok, second[0].query)])
    assert torch.equal(a.model(input_ids=ids).logits, b.model(input_ids=ids).logits)


# --- the irrelevant prompts --------------------------------------------------------------------

def test_irrelevant_prompts_must_be_disjoint_from_the_edited_records(edited):
    lm, editor, _, _ = edited
    rid, subject, prompt, _ = editor.pool()[7]
    template = prompt.replace(subject, "{}")
    clash = random_edits(1, seed=4)[0].model_copy(update={"subject": subject, "template": template})
    with pytest.raises(WISEDataError) as info:
        editor.apply([clash])
    assert "\n" not in str(info.value) and f"record {rid}" in str(info.value)
    with pytest.raises(WISEDataError):
        WISEEditor.check_records(editor.hp, [clash])
    WISEEditor.check_records(editor.hp.model_copy(update={"irrelevant_range": (0, 7)}), [clash])  # sliced away


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("wise-ws"))


def test_a_run_refuses_irrelevant_prompts_that_overlap_its_records_before_any_work(ws, tmp_path):
    cfg = config(ws, tmp_path / "out", methods=("wise",), overrides={"irrelevant": str(ws["data"])})
    with pytest.raises(WISEDataError, match="share a subject or prompt"):
        run_experiment(cfg, progress=False)
    assert not (tmp_path / "out").exists()


# --- in a run ----------------------------------------------------------------------------------

KILL_AFTER_3RD_CHECKPOINT = "editprobe.runs.store:RunDir.record_checkpoint:3:after"


def _cli(ws, out, env, *extra, kill=None):
    return cli_run(ws, out, env, ("wise",), *extra, probes=("negation", "efficacy"), mom2=False, kill=kill)


def test_wise_runs_beside_memit(ws, tmp_path):
    cfg = config(ws, tmp_path / "out", methods=("memit", "wise"), probes=("negation", "efficacy"))
    summary = run_experiment(cfg, progress=False)
    rows = {r["method"]: r for r in summary["results"]}
    assert set(rows) == {"memit", "wise"}
    assert rows["wise"]["hparams"]["layer"] == 2 and rows["wise"]["probes"]["negation"]["metrics"]


def test_a_killed_wise_run_resumes_to_the_uninterrupted_one(ws, tmp_path):
    env = subprocess_env(tmp_path)
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    assert _cli(ws, reference, env).returncode == 0
    # checkpoints: the positive stage's two batches, then the negative stage's first
    first = _cli(ws, killed, env, kill=KILL_AFTER_3RD_CHECKPOINT)
    assert first.returncode == -signal.SIGKILL, first.stderr
    state = json.loads((killed / "checkpoints" / "cf__wise__negative" / "state.json").read_text())
    assert state["batches"] == 1 and state["current"]["n_edits"] == 3
    resumed = _cli(ws, killed, env, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert comparable(read_summary(killed)) == comparable(read_summary(reference))
    assert read_samples(killed) == read_samples(reference)
