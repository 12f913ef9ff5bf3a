"""RLEdit's hypernetwork and editor on the trained tiny Llama: training lowers the edit loss
of batches it never saw, sequential batches apply, save -> load -> restore is exact."""

from __future__ import annotations

import random

import pytest
import torch
from test_engine_helpers import fresh, random_edits, true_object

from editprobe.editing.rledit import (Hypernetwork, HypernetError, RLEditEditor, RLEditSettings, TrainingExample,
                                      TrainingRun, edit_modules, module_shapes, train_hypernetwork)
from editprobe.editing.rledit.cache import answer_loss, teacher_forced
from editprobe.models.tiny import tiny_facts

# Tiny-model settings: a larger initial step size and meta learning rate than RLEdit's (1e-6,
# 1e-5), and an optimizer step after every batch, so a few batches show learning.
SETTINGS = RLEditSettings(layers=[2, 3], rank=16, n_blocks=2, lr=1e-3, meta_lr=1e-3, back_depth=3, seed=0,
                          n_steps=6, batch_size=8, update_every=1)


def _examples(n: int, seed: int) -> list[TrainingExample]:
    """Counterfactual edits of tiny facts; a true tiny fact as each one's unrelated prompt."""
    rng = random.Random(seed + 100)
    facts = tiny_facts()
    out = []
    for r in random_edits(n, seed=seed):
        prompt = r.template.format(r.subject)
        t, s, o = rng.choice(facts)
        out.append(TrainingExample((prompt, r.target), [(prompt, r.target)], [(t.format(s), o)]))
    return out


def _requests(n: int, seed: int):
    return random_edits(n, seed=seed)


def _editor(settings: RLEditSettings = SETTINGS) -> RLEditEditor:
    lm = fresh("llama")
    shapes = module_shapes(edit_modules(lm.model, lm.adapter, settings))
    return RLEditEditor(lm.model, lm.tokenizer, Hypernetwork(settings, shapes))


@torch.no_grad()
def _loss(editor: RLEditEditor, examples) -> float:
    batch = teacher_forced(editor.tok, [e.edit for e in examples], editor.device)
    return float(answer_loss(editor.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits, batch))


def _edit_loss_after(editor: RLEditEditor, seed: int) -> float:
    """The held-out edits' loss after editing with them (the model restored afterwards)."""
    editor.apply(_requests(8, seed))
    loss = _loss(editor, _examples(8, seed))
    editor.restore()
    return loss


def test_training_lowers_the_edit_loss_of_unseen_batches():
    editor = _editor()
    before_any = _loss(editor, _examples(8, seed=7))
    untrained = _edit_loss_after(editor, seed=7)
    history = train_hypernetwork(editor, _examples(48, seed=1))
    assert len(history) == 6 and all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    trained = _edit_loss_after(editor, seed=7)
    print(f"held-out edit loss: unedited {before_any:.3f}, untrained hypernet {untrained:.3f}, trained {trained:.3f}")
    assert trained < 0.8 * untrained and untrained <= before_any + 1e-6


def test_three_batches_apply_in_sequence_and_restore_is_exact():
    editor = _editor()
    original = {n: m.weight.detach().clone() for n, m in editor.modules.items()}
    for seed in (1, 2, 3):
        report = editor.apply(_requests(4, seed))
        assert report.batch == seed and [r.id for r in report.requests] == ["r0", "r1", "r2", "r3"]
        assert all(0.0 < r.target_prob <= 1.0 for r in report.requests)
    assert editor._n_edits == 12
    for name, module in editor.modules.items():
        assert torch.equal(module.weight, (original[name].float() + editor.deltas[name]).to(module.weight.dtype))
    editor.restore()
    assert all(torch.equal(m.weight, original[n]) for n, m in editor.modules.items())


def test_hypernetwork_and_editor_state_save_and_load_exactly(tmp_path):
    editor = _editor()
    train_hypernetwork(editor, _examples(16, seed=1))
    editor.hypernet.save(tmp_path / "net")
    loaded, meta = Hypernetwork.load(tmp_path / "net")
    assert meta["settings"] == SETTINGS.model_dump(mode="json")
    for (k, a), (_, b) in zip(editor.hypernet.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.cpu(), b.cpu()), k
    editor.apply(_requests(4, seed=5))
    editor.save_state(tmp_path / "state")
    edited = {n: m.weight.detach().clone() for n, m in editor.modules.items()}
    norms = editor._norms()
    editor.restore()
    again = RLEditEditor(editor.model, editor.tok, loaded)
    again.load_state(tmp_path / "state")
    assert all(torch.equal(m.weight, edited[n]) for n, m in again.modules.items())
    assert all(torch.equal(v, norms[k]) for k, v in again._norms().items())
    # the next batch is the same from the reloaded state as from the original one
    nxt = _requests(4, seed=6)
    shifts_again = again.shifts(nxt)
    again.restore()
    editor.load_state(tmp_path / "state")
    shifts = editor.shifts(nxt)
    assert all(torch.equal(shifts[n], shifts_again[n]) for n in shifts)


def test_a_hypernetwork_for_other_modules_is_refused(tmp_path):
    editor = _editor()
    other = Hypernetwork(SETTINGS.model_copy(update={"layers": [1]}), {"x": (3, 4)})
    with pytest.raises(HypernetError, match="trained for other edit modules"):
        RLEditEditor(editor.model, editor.tok, other)
    with pytest.raises(HypernetError, match="not a trained RLEdit hypernetwork"):
        Hypernetwork.load(tmp_path)


@pytest.mark.parametrize("grad_handling", ["reference", "summed"])
@pytest.mark.parametrize("update_every", [1, 4])
def test_a_training_run_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, update_every,
                                                                                       grad_handling):
    # a clip bound every batch's gradient exceeds: the checkpoint after step 3 holds a gradient
    # clipped after every batch (reference) or the plain sum (summed)
    settings = SETTINGS.model_copy(update={"update_every": update_every, "n_steps": 5, "batch_size": 4,
                                           "max_grad_norm": 1e-3, "grad_handling": grad_handling})
    examples = _examples(20, seed=2)
    whole = _editor(settings)
    TrainingRun(whole, examples, tmp_path / "whole").run()
    reference = {k: v.clone() for k, v in whole.hypernet.state_dict().items()}

    class Crash(Exception):
        pass

    def crash_after_step_3(step, total, stats):
        if step == 3:
            raise Crash

    first = _editor(settings)
    with pytest.raises(Crash):
        TrainingRun(first, examples, tmp_path / "cut").run(on_step=crash_after_step_3)
    assert all(torch.equal(m.weight, w) for (_, m), w in zip(first.modules.items(), _pristine(first)))  # restored
    if update_every == 4:  # three batches' gradient, not yet spent by an optimizer step
        from safetensors.torch import load_file

        norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in
                                                           load_file(tmp_path / "cut" / "checkpoint" /
                                                                     "grads.safetensors").values()])))
        assert norm <= 1e-3 * (1 + 1e-5) if grad_handling == "reference" else norm > 1e-2
    again = _editor(settings)  # a fresh hypernetwork: everything comes from the checkpoint
    history = TrainingRun(again, examples, tmp_path / "cut").run(resume=True)
    assert len(history) == 5
    for key, value in again.hypernet.state_dict().items():
        assert torch.equal(value, reference[key]), key


def _pristine(editor):
    from test_engine_helpers import pristine

    weights = pristine("llama")
    return [weights[f"{name}.weight"] for name in editor.modules]


def test_the_gradient_handling_keys_the_cache_and_a_network_saved_before_it_existed_reads_as_summed(tmp_path):
    import json

    from editprobe.editing.rledit.store import DEFAULT_DATA, DEFAULT_EXCLUDE, training_key

    reference = SETTINGS.model_copy(update={"grad_handling": "reference"})
    summed = SETTINGS.model_copy(update={"grad_handling": "summed"})
    assert training_key("f", reference, DEFAULT_DATA, DEFAULT_EXCLUDE) != training_key("f", summed, DEFAULT_DATA,
                                                                                       DEFAULT_EXCLUDE)
    assert RLEditSettings(layers=[1]).grad_handling == "reference"  # the default: RLEdit's code
    editor = _editor(summed)
    editor.hypernet.save(tmp_path / "net")
    meta = json.loads((tmp_path / "net" / "hypernet.json").read_text())
    del meta["settings"]["grad_handling"]  # as editprobe wrote it before the setting existed
    (tmp_path / "net" / "hypernet.json").write_text(json.dumps(meta))
    loaded, _ = Hypernetwork.load(tmp_path / "net")
    assert loaded.settings == summed and loaded.settings != reference
