"""The ``ft`` editor (constrained fine-tuning with augmentation) on the trained tiny models:
edits land, only the edit layer changes and stays within norm_constraint, unlikelihood keeps
the opposite query off the target, failures change nothing, save -> load continues exactly."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import all_weights, fresh, n_exact, random_edits

from editprobe.data.records import EditRequest
from editprobe.data.transform import IDENTITY
from editprobe.editing import METHODS, lte_methods, make_editor, resolve_hparams
from editprobe.editing.settings.hparams import HParamsError, available
from editprobe.editing.prompts import RequestError
from editprobe.editing.finetune.ft import FTEditor
from editprobe.editing.lte.state import StateError
from editprobe.models.tokens import encode_open, continuation_ids

LAYER = 2  # tiny.yaml's edit layer


def _requests(n: int = 8, seed: int = 0, opposite: bool = True) -> list[EditRequest]:
    # The tiny templates have no verb ("The mother tongue of {}"), so the rules cannot negate
    # them: the opposite query is given, as the negation plan of a run gives it.
    reqs = random_edits(n, seed=seed)
    return [r.model_copy(update={"opposite_template": r.template + " is not"}) for r in reqs] if opposite else reqs


@torch.no_grad()
def _prob(model, tok, query: str, target: str) -> float:
    """Geometric-mean probability of the target tokens after the query."""
    q, t = encode_open(tok, query), continuation_ids(tok, query, target)
    logp = torch.log_softmax(model(input_ids=torch.tensor([q + t[:-1]])).logits[0, len(q) - 1:].float(), -1)
    return float(logp[range(len(t)), t].mean().exp())


def _editor(lm, **overrides) -> FTEditor:
    return make_editor("ft", lm.model, lm.tokenizer, "tiny", overrides=overrides)


def test_ft_is_a_registered_non_lte_weight_editor():
    assert METHODS["ft"] is FTEditor and "ft" not in lte_methods()
    assert FTEditor.edit_stages == ("positive", "negative")
    assert not FTEditor.uses_preserved_keys and not FTEditor.needs_covariance
    editor = _editor(fresh("llama"))
    assert editor.prompt_transform() is IDENTITY and editor.variant() is None and editor.finalize() == {}
    for key in available("ft"):  # every shipped file validates and cites its source
        hp = resolve_hparams("ft", key)
        assert hp.method == "ft" and hp.source and hp.layers, key


def test_edits_land_only_the_edit_layer_changes_within_the_constraint():
    lm = fresh("llama")
    model, tok = lm.model, lm.tokenizer
    requests = _requests(10)
    assert n_exact(model, tok, requests) == 0
    before = all_weights(model)
    editor = _editor(lm, lr=2e-2, num_steps=30)
    report = editor.apply(requests)

    hits = n_exact(model, tok, requests)
    assert hits >= 8, f"ft: {hits}/10 edits exact"
    name = f"{lm.adapter.path('mlp_out', LAYER)}.weight"
    state = model.state_dict()
    assert {k for k, v in before.items() if not torch.equal(state[k], v)} == {name}
    change = (state[name] - before[name]).abs().max()
    assert 0 < change <= editor.hp.norm_constraint * (1 + 1e-5)
    assert torch.equal(state[name], before[name] + editor.deltas[LAYER])
    # The report describes the batch.
    assert [r.id for r in report.requests] == [r.id for r in requests] and report.batch == 1
    assert 1 <= report.steps <= 30 and len(report.loss_history) >= report.steps
    assert report.negation_terms == 10 and report.negation_skipped == []
    assert sum(r.target_prob > 0.5 for r in report.requests) >= 8
    assert all(r.opposite_prob is not None for r in report.requests)
    assert all("opposite_prob" in r for r in report.model_dump()["requests"])


def test_unlikelihood_lowers_the_target_after_the_opposite_query():
    requests = _requests(8)
    opposite_probs, exact = {}, {}
    for augment in (False, True):
        lm = fresh("llama")
        editor = _editor(lm, augment_negation=augment)
        report = editor.apply(requests)
        assert report.negation_terms == (8 if augment else 0)
        exact[augment] = n_exact(lm.model, lm.tokenizer, requests)
        opposite_probs[augment] = sum(_prob(lm.model, lm.tokenizer, r.opposite_template.format(r.subject), r.target)
                                      for r in requests) / len(requests)
    assert opposite_probs[True] < 0.5 * opposite_probs[False], opposite_probs
    assert exact[True] >= exact[False] - 1  # the edits themselves still land


def test_opposite_query_from_the_negation_rules_or_skipped_and_counted():
    lm = fresh("llama")
    editor = _editor(lm, num_steps=1)
    negatable = EditRequest(id="a", subject="Alice", template="{} was born in", target="Paris")
    given = EditRequest(id="b", subject="Bob", template="The birthplace of {}", target="Rome",
                        opposite_template="The birthplace of {} is not")
    plain = EditRequest(id="c", subject="Carol", template="The birthplace of {}", target="Tokyo")
    assert editor.opposite(negatable) == "{} was not born in"
    report = editor.apply([negatable, given, plain])
    assert report.negation_terms == 2 and report.negation_skipped == ["c"]
    assert report.requests[2].opposite_prob is None


@pytest.mark.parametrize("failure", ["request", "nan"])
def test_a_failed_batch_leaves_model_and_editor_as_they_were(failure, monkeypatch):
    lm = fresh("llama")
    editor = _editor(lm, num_steps=3)
    editor.apply(_requests(4, seed=1))
    before, deltas = all_weights(lm.model), {l: d.clone() for l, d in editor.deltas.items()}
    if failure == "request":
        bad = EditRequest.model_construct(id="bad", subject="Zed", template="no placeholder", target="Paris")
        with pytest.raises(RequestError, match="request bad"):
            editor.apply(_requests(3, seed=2) + [bad])
    else:
        calls = {"n": 0}
        original = FTEditor._row_losses

        def nan_on_the_third_pass(self, *args, **kwargs):
            calls["n"] += 1
            out = original(self, *args, **kwargs)
            if calls["n"] == 3:  # during the steps, after the first update
                return out * float("nan")
            return out

        monkeypatch.setattr(FTEditor, "_row_losses", nan_on_the_third_pass)
        with pytest.raises(FloatingPointError, match="non-finite"):
            editor.apply(_requests(4, seed=2))
    state = lm.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items())
    assert editor._batches == 1 and all(torch.equal(editor.deltas[l], d) for l, d in deltas.items())


def test_nan_in_the_first_batch_leaves_the_model_unedited(monkeypatch):
    lm = fresh("llama")
    before = all_weights(lm.model)
    editor = _editor(lm, num_steps=3)
    monkeypatch.setattr(FTEditor, "_masters", lambda self: {LAYER: torch.full_like(
        lm.adapter.edit_weight(lm.model, LAYER), float("nan"))})
    with pytest.raises(FloatingPointError):
        editor.apply(_requests(2))
    state = lm.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in before.items()) and editor.deltas == {}


def test_save_load_and_continue_is_bit_identical(tmp_path):
    first, second = _requests(4, seed=3), _requests(4, seed=4)
    lm = fresh("llama")
    editor = _editor(lm, num_steps=5)
    editor.apply(first)
    editor.save_state(tmp_path / "state")
    after_first = all_weights(lm.model)
    editor.apply(second)
    continuous = all_weights(lm.model)
    templates = editor.templates()

    lm = fresh("llama")  # the unedited model again, as a resumed run has it
    resumed = _editor(lm, num_steps=5)
    resumed.prepare()  # a resumed run prepares before loading (templates of the unedited model)
    resumed.load_state(tmp_path / "state")
    state = lm.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in after_first.items())
    assert resumed._batches == 1 and resumed.templates() == templates
    resumed.apply(second)
    state = lm.model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in continuous.items())
    resumed.restore()
    assert all(torch.equal(lm.model.state_dict()[k], v) for k, v in fresh("llama").model.state_dict().items())


def test_load_state_refuses_other_layers_or_methods(tmp_path):
    lm = fresh("llama")
    editor = _editor(lm, num_steps=1)
    editor.apply(_requests(2))
    editor.save_state(tmp_path / "state")
    with pytest.raises(StateError, match="edit layers"):
        _editor(fresh("llama"), layers=[1]).load_state(tmp_path / "state")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "state.json").write_text('{"method": "memit", "version": 2}')
    with pytest.raises(StateError, match="not ft"):
        _editor(fresh("llama")).load_state(tmp_path / "other")


def test_gpt2_conv1d_weight_is_trained_in_its_stored_orientation(tiny):
    lm = tiny("gpt2")  # random weights suffice: which weight changes, and its shape
    before = all_weights(lm.model)
    editor = _editor(lm, num_steps=3)
    editor.apply(_requests(3))
    name = f"transformer.h.{LAYER}.mlp.c_proj.weight"
    state = lm.model.state_dict()
    assert {k for k, v in before.items() if not torch.equal(state[k], v)} == {name}
    assert editor.deltas[LAYER].shape == state[name].shape


def test_replaying_the_blocks_below_equals_running_them():
    lm = fresh("llama")
    editor = _editor(lm)
    rows, _ = editor.rows(_requests(4))
    weights = {editor._param_name(LAYER): lm.adapter.edit_weight(lm.model, LAYER).detach().float()}
    full, below = editor._row_losses(weights, rows, record=True)
    assert torch.equal(editor._row_losses(weights, rows, below), full)
    assert isinstance(lm.model.model.layers[0], torch.nn.Module) and type(lm.model.model.layers[0]).__name__ != "_Replay"


@pytest.mark.parametrize("overrides,match", [
    ({"lr": -1}, "lr"),
    ({"num_steps": 0}, "num_steps"),
    ({"layers": [2, 1]}, "strictly increasing"),
    ({"norm_constraint": 0}, "norm_constraint"),
    ({"steps": 3}, "steps"),
])
def test_bad_hparams_are_one_line_errors(overrides, match):
    with pytest.raises(HParamsError, match=match) as info:
        resolve_hparams("ft", "tiny", overrides)
    assert "\n" not in str(info.value)


def test_edit_layers_outside_the_model_are_refused():
    with pytest.raises(HParamsError, match=r"outside the model's layers 0\.\.3") as info:
        _editor(fresh("llama"), layers=[7])
    assert "\n" not in str(info.value)


def test_default_layer_is_the_middle_one():
    lm = fresh("llama")
    editor = make_editor("ft", lm.model, lm.tokenizer, {"num_steps": 1})
    assert editor.layers == [2] and editor.hp.layers == [2]
