"""GRACE (editing/memory/grace.py, docs/grace.md) on the trained tiny Llama: the codebook's
hit/miss by radius against a hand-made forward, deferral bit for bit, expand/split, the key
position under padding, state round trips, restore."""

from __future__ import annotations

import pytest
import torch
from tiny_trained import fresh

from editprobe.data.records import EditRequest
from editprobe.data.transform import IDENTITY
from editprobe.editing import make_editor, method_class
from editprobe.editing.api import TrainedForm
from editprobe.editing.lte.state import StateError
from editprobe.editing.memory.codebook import Codebook
from editprobe.editing.memory.grace import GraceEditor
from editprobe.editing.settings.hparams import HParamsError
from editprobe.models.decoding import decoding_from, decoding_positions
from editprobe.models.tiny import tiny_facts
from editprobe.models.tokens import encode_open
from editprobe.probes.exact import decode_targets, exact_match_batch, generate_exact_match, match_and_decode
from editprobe.probes.batched import shared_prefix
from editprobe.probes.scoring import teacher_forced_ids

FACTS = tiny_facts(0)


def _new_object(template: str, old: str) -> str:
    return next(o for o in sorted({o for t, _, o in FACTS if t == template}) if o != old)


def _requests(start: int, n: int) -> list[EditRequest]:
    return [EditRequest(id=f"r{i}", subject=s, template=t, target=_new_object(t, o))
            for i, (t, s, o) in enumerate(FACTS[start:start + n], start)]


_made: list[GraceEditor] = []


@pytest.fixture
def lm():
    """The session's trained tiny Llama; every GRACE editor a test made is restored after it
    (its hook would otherwise stay on the shared model)."""
    yield fresh("llama")
    while _made:
        _made.pop().restore()


def _editor(lm, **overrides) -> GraceEditor:
    _made.append(make_editor("grace", lm.model, lm.tokenizer, "tiny", overrides))
    return _made[-1]


@torch.no_grad()
def _logits(lm, text: str) -> torch.Tensor:
    ids = torch.tensor([encode_open(lm.tokenizer, text)])
    return lm.model(input_ids=ids, use_cache=False).logits[0]


@torch.no_grad()
def _module_inputs(lm, editor, text: str) -> torch.Tensor:
    seen = {}
    handle = editor.module.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
    try:
        _logits(lm, text)
    finally:
        handle.remove()
    return seen["x"][0].float()


@torch.no_grad()
def _replaced_by_hand(lm, editor, text: str, positions: list[int], value: torch.Tensor) -> torch.Tensor:
    """The unedited model's logits with the module's output at ``positions`` set to ``value``."""
    def put(_module, _args, output):
        output = output.clone()
        output[0, positions] = value.to(output.dtype)
        return output

    editor._detach()
    handle = editor.module.register_forward_hook(put)
    try:
        return _logits(lm, text)
    finally:
        handle.remove()
        editor._attach()


def test_grace_is_a_registered_editor_whose_edit_is_not_in_the_weights(lm):
    cls = method_class("grace")
    assert cls is GraceEditor and cls.edit_in_weights is False
    assert cls.trains_on == {TrainedForm.POSITIVE} and cls.seed_fields == ("seed",)
    editor = _editor(lm)
    assert editor.prompt_transform() is IDENTITY and editor.deltas == {} and editor.trained_forms() == {TrainedForm.POSITIVE}


def test_edits_land_and_the_weights_never_change(lm):
    weights = {k: v.clone() for k, v in lm.model.state_dict().items()}
    editor = _editor(lm)
    requests = _requests(0, 4)
    report = editor.apply(requests)
    assert exact_match_batch(lm.model, lm.tokenizer, [(r.query, r.target) for r in requests]) == [True] * 4
    assert report.n_keys == 4 and [r.placement for r in report.requests] == ["added"] * 4
    assert all(torch.equal(weights[k], v) for k, v in lm.model.state_dict().items())
    assert editor.codebook.keys.dtype == editor.codebook.values.dtype == torch.float32


def test_a_query_inside_the_radius_gets_the_value_one_outside_defers(lm):
    editor = _editor(lm)
    request = _requests(0, 1)[0]
    editor.apply([request])
    key, value = editor.codebook.keys[0], editor.codebook.values[0]
    # The edit prompt: its last token's input is the key; only there is the value put.
    x = _module_inputs(lm, editor, request.query)
    distances = torch.linalg.vector_norm(x - key, dim=1)
    inside = [int(i) for i in torch.nonzero(distances <= editor.codebook.radii[0])]
    assert inside == [len(x) - 1]
    assert torch.equal(_logits(lm, request.query), _replaced_by_hand(lm, editor, request.query, inside, value))
    # Another subject's query, with the radius set just above / just below its last token's distance.
    other = FACTS[8][0].format(FACTS[8][1])
    d = float(torch.linalg.vector_norm(_module_inputs(lm, editor, other)[-1] - key))
    plain = _replaced_by_hand(lm, editor, other, [], value)
    last = len(encode_open(lm.tokenizer, other)) - 1
    editor.codebook.radii[0] = d * (1 + 1e-4)
    assert torch.equal(_logits(lm, other), _replaced_by_hand(lm, editor, other, [last], value))
    assert not torch.equal(_logits(lm, other), plain)
    editor.codebook.radii[0] = d * (1 - 1e-4)
    assert torch.equal(_logits(lm, other), plain)


def test_deferral_leaves_unrelated_outputs_bit_identical(lm):
    unrelated = [t.format(s) + " " + o for t, s, o in FACTS[20:40]]
    ids = [encode_open(lm.tokenizer, q) for q in unrelated]
    before = teacher_forced_ids(lm.model, lm.tokenizer, [(q[:-2], q[-2:]) for q in ids])
    single = [_logits(lm, q) for q in unrelated[:5]]
    editor = _editor(lm)
    editor.apply(_requests(0, 4))
    for q in unrelated:  # none of their positions is within a radius
        dist, nearest = editor.codebook.nearest(_module_inputs(lm, editor, q))
        assert bool((dist > editor.codebook.radii[nearest]).all())
    assert teacher_forced_ids(lm.model, lm.tokenizer, [(q[:-2], q[-2:]) for q in ids]) == before
    assert all(torch.equal(_logits(lm, q), s) for q, s in zip(unrelated, single))


def test_the_codebook_adds_expands_and_splits_as_grace_s_algorithm():
    book = Codebook.empty(2, 3, "cpu")
    value = torch.zeros(3)
    assert book.place(torch.tensor([0.0, 0.0]), value, (1,), "a", 1.0, "coverage") == (0, "added")
    # within eps + r of key 0, same target: key 0 answers, its radius reaches the new key
    assert book.place(torch.tensor([1.5, 0.0]), value, (1,), "b", 1.0, "coverage") == (0, "expanded")
    assert len(book) == 1 and float(book.radii[0]) == 1.5
    assert book.place(torch.tensor([1.0, 0.0]), value, (1,), "c", 1.0, "coverage") == (0, "covered")
    # within reach, another target: a new key, both radii half their distance
    assert book.place(torch.tensor([0.0, 2.0]), value, (2,), "d", 1.0, "coverage") == (1, "split")
    assert book.radii.tolist() == [1.0, 1.0] and book.targets == [(1,), (2,)] and book.edit_ids == ["a", "d"]
    # far from every ball: a new key with the initial radius
    assert book.place(torch.tensor([10.0, 0.0]), value, (1,), "e", 1.0, "coverage") == (2, "added")
    assert book.radii.tolist() == [1.0, 1.0, 1.0]
    moving = Codebook.empty(2, 3, "cpu")
    moving.place(torch.tensor([0.0, 0.0]), value, (1,), "a", 1.0, "moving_average")
    moving.place(torch.tensor([1.5, 0.0]), value, (1,), "b", 1.0, "moving_average")
    assert moving.keys[0].tolist() == [0.75, 0.0] and float(moving.radii[0]) == 1.5


def test_an_edit_near_a_key_with_the_same_target_shares_its_value_another_target_splits(lm):
    (t, s1, o1), (_, s2, o2) = [f for f in FACTS if f[0] == FACTS[0][0]][:2]
    first = EditRequest(id="a", subject=s1, template=t, target=_new_object(t, o1))
    same = EditRequest(id="b", subject=s2, template=t, target=first.target)
    probe = _editor(lm)
    d = float(torch.linalg.vector_norm(_module_inputs(lm, probe, first.query)[-1] - _module_inputs(lm, probe, same.query)[-1]))
    # The second key lies outside the first's radius but within reach of it (d <= eps + eps).
    editor = _editor(lm, eps=0.75 * d)
    editor.apply([first])
    report = editor.apply([same])
    assert report.requests[0].placement == "expanded" and report.n_keys == 1
    assert float(editor.codebook.radii[0]) == pytest.approx(d, rel=1e-4)
    assert exact_match_batch(lm.model, lm.tokenizer, [(first.query, first.target), (same.query, same.target)]) == [True] * 2
    other = EditRequest(id="c", subject=s2, template=t, target=_new_object(t, first.target))
    editor.restore()
    editor.apply([first])
    report = editor.apply([other])
    assert report.requests[0].placement == "split" and report.n_keys == 2
    assert editor.codebook.radii.tolist() == pytest.approx([d / 2, d / 2], rel=1e-4)
    assert exact_match_batch(lm.model, lm.tokenizer, [(first.query, first.target), (other.query, other.target)]) == [True] * 2


def test_the_key_is_found_under_padding_batched_as_alone(lm):
    editor = _editor(lm)
    requests = _requests(0, 6)
    editor.apply(requests)
    # Queries of different lengths, edited and not, in one padded batch.
    pairs = [(r.query, r.target) for r in requests] + [(t.format(s), o) for t, s, o in FACTS[30:36]]
    ids = [(encode_open(lm.tokenizer, q), encode_open(lm.tokenizer, q + " " + a)[len(encode_open(lm.tokenizer, q)):])
           for q, a in pairs]
    assert len({len(q) for q, _ in ids}) > 1
    batched = teacher_forced_ids(lm.model, lm.tokenizer, ids, batch_size=len(ids))  # right padding
    alone = [teacher_forced_ids(lm.model, lm.tokenizer, [p], batch_size=1)[0] for p in ids]
    assert [b.predicted for b in batched] == [a.predicted for a in alone]
    assert all(b.logprobs == pytest.approx(a.logprobs, abs=1e-4) for b, a in zip(batched, alone))
    assert [b.exact for b in batched[:6]] == [True] * 6
    # generate() with left padding (and its KV cache) against one query at a time, no padding
    decoded = decode_targets(lm.model, lm.tokenizer, pairs, extra_tokens=0, batch_size=len(pairs))
    assert [d.match for d in decoded] == [generate_exact_match(lm.model, lm.tokenizer, q, a)[0] for q, a in pairs]
    assert [d.match for d in decoded[:6]] == [True] * 6
    # the probes' prompt engine: left-padded prompt passes, a shared prefix, suffixes from the cache
    matches, cached = match_and_decode(lm.model, lm.tokenizer, pairs, extra_tokens=1)
    assert matches == [b.exact for b in batched] and [c.match for c in cached] == [d.match for d in decoded]
    template = requests[0].template  # one template: the prompts share a prefix run once
    same = [(r.query, r.target) for r in requests if r.template == template]
    same += [(template.format(s), o) for t, s, o in FACTS[30:] if t == template][:3]
    assert shared_prefix([encode_open(lm.tokenizer, q) for q, _ in same]) >= 4 and len(same) > 2
    assert match_and_decode(lm.model, lm.tokenizer, same, extra_tokens=None)[0] == \
        [generate_exact_match(lm.model, lm.tokenizer, q, a)[0] for q, a in same]


def test_a_prompt_that_contains_the_edit_prompt_is_not_answered_from_its_inner_position(lm):
    editor = _editor(lm)
    request = _requests(0, 1)[0]
    longer = request.query + " and"  # the edit prompt's key sits at its second-to-last position
    plain = _logits(lm, longer)
    editor.apply([request])
    x = _module_inputs(lm, editor, longer)
    dist, _ = editor.codebook.nearest(x)
    assert float(dist[-2]) < 1e-3 and float(dist[-1]) > float(editor.codebook.radii[0])
    assert torch.equal(_logits(lm, longer), plain)  # GRACE reads the last token only
    # ... while a teacher-forced pass over the edit prompt + target routes from its last token on
    assert exact_match_batch(lm.model, lm.tokenizer, [(request.query, request.target)]) == [True]


def test_decoding_positions_under_padding_caches_and_declarations():
    ids = torch.zeros(2, 4, dtype=torch.long)
    right = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert decoding_positions(ids, right).tolist() == [[False, True, False, False], [False, False, False, True]]
    assert decoding_positions(ids, left)[:, -1].all() and decoding_positions(ids, left).sum() == 2
    assert decoding_positions(ids, None).tolist() == [[False, False, False, True]] * 2
    step = torch.zeros(2, 1, dtype=torch.long)  # a decoding step after 5 cached positions
    assert decoding_positions(step, torch.ones(2, 6, dtype=torch.long)).tolist() == [[True], [True]]
    with decoding_from([1, 3]):
        assert decoding_positions(ids, right).tolist() == [[False, True, True, True], [False, False, False, True]]
        with decoding_from(4):
            assert not decoding_positions(ids, right).any()
    assert decoding_positions(ids, right).sum() == 2


def test_save_load_and_the_next_batch_is_bit_identical(lm, tmp_path):
    first, second = _requests(0, 3), _requests(3, 3)
    editor = _editor(lm)
    editor.apply(first)
    editor.save_state(tmp_path / "state")
    editor.apply(second)
    expected = {k: v.clone() for k, v in editor.codebook.tensors().items()}
    logits = _logits(lm, second[0].query)
    editor.restore()

    lm = fresh("llama")  # the unedited model again, as a resumed run has it
    resumed = _editor(lm)
    resumed.prepare()
    resumed.load_state(tmp_path / "state")
    assert resumed._batches == 1 and resumed._n_edits == 3
    resumed.apply(second)
    got = resumed.codebook.tensors()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert torch.equal(_logits(lm, second[0].query), logits)


def test_restore_removes_the_hook_and_the_codebook(lm):
    query = FACTS[0][0].format(FACTS[0][1])
    plain = _logits(lm, query)
    editor = _editor(lm)
    editor.apply(_requests(0, 2))
    assert not torch.equal(_logits(lm, query), plain)
    editor.restore()
    assert editor.codebook is None and not editor.module._forward_hooks
    assert not lm.model._forward_pre_hooks and not lm.model._forward_hooks
    assert torch.equal(_logits(lm, query), plain)


def test_a_failed_batch_leaves_the_codebook_as_it_was(lm, monkeypatch):
    editor = _editor(lm)
    editor.apply(_requests(0, 2))
    before = {k: v.clone() for k, v in editor.codebook.tensors().items()}

    def boom(*_args, **_kwargs):
        raise FloatingPointError("grace: non-finite loss at step 0")

    monkeypatch.setattr(GraceEditor, "_train", boom)
    with pytest.raises(FloatingPointError):
        editor.apply(_requests(2, 2))
    assert all(torch.equal(editor.codebook.tensors()[k], v) for k, v in before.items())
    editor.restore()
    with pytest.raises(FloatingPointError):
        editor.apply(_requests(2, 2))
    assert editor.codebook is None and not editor.module._forward_hooks


def test_the_cold_values_are_seeded_and_follow_the_seed(lm):
    runs = {}
    for seed in (0, 0, 1):
        editor = _editor(lm, seed=seed, n_iter=1)
        editor.apply(_requests(0, 2))
        runs.setdefault(seed, []).append(editor.codebook.values.clone())
        editor.restore()
    assert torch.equal(*runs[0]) and not torch.equal(runs[0][0], runs[1][0])


def test_load_state_refuses_another_layer_or_method(lm, tmp_path):
    editor = _editor(lm)
    editor.apply(_requests(0, 1))
    editor.save_state(tmp_path / "s")
    editor.restore()
    with pytest.raises(StateError, match="layer 2, not 1"):
        _editor(lm, layer=1).load_state(tmp_path / "s")
    with pytest.raises(StateError, match="not ft"):
        make_editor("ft", lm.model, lm.tokenizer, "tiny").load_state(tmp_path / "s")


@pytest.mark.parametrize("overrides,match", [({"eps": 0}, "eps"), ({"n_iter": 0}, "n_iter"),
                                             ({"replacement": "replace_all"}, "replacement"),
                                             ({"bogus": 1}, "bogus")])
def test_bad_settings_are_one_line_errors(lm, overrides, match):
    with pytest.raises(HParamsError, match=match):
        _editor(lm, **overrides)


def test_a_layer_outside_the_model_is_refused_and_the_default_is_three_quarters_deep(lm):
    with pytest.raises(HParamsError, match="outside the model's layers 0..3"):
        _editor(lm, layer=4)
    assert make_editor("grace", lm.model, lm.tokenizer, {}).hp.layer == 3


@pytest.mark.parametrize("model_type,dtype", [("gpt2", torch.float32), ("llama", torch.bfloat16)])
def test_other_architectures_and_dtypes_keep_an_fp32_codebook(tiny, model_type, dtype):
    lm = tiny(model_type)
    lm.model.to(dtype)
    request = EditRequest(id="x", subject="Alice", template="The mother tongue of {} is", target="Italian")
    editor = make_editor("grace", lm.model, lm.tokenizer, "tiny", {"layer": 1})
    try:
        editor.apply([request])
        assert editor.codebook.keys.dtype == editor.codebook.values.dtype == editor.codebook.radii.dtype == torch.float32
        logits = _logits(lm, request.query)
        assert logits.dtype == dtype and torch.isfinite(logits.float()).all()
    finally:
        editor.restore()
