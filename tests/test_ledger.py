"""The weight ledger (editing/ledger.py): weights written from the fp32 master whatever the
model's dtype, exact rollback and restore, the saved form, FT's replace and PRUNE's
set_delta; and editor states saved before the ledger existed load to the same weights."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from editprobe.editing.ledger import WeightLedger

FIXTURES = Path(__file__).parent / "fixtures" / "saved_states"


def _weights(dtype=torch.bfloat16, seed: int = 0) -> dict[int, torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.nn.Parameter(torch.randn(8, 16, generator=g).to(dtype), requires_grad=False) for k in range(3)}


def _ledger(weights) -> WeightLedger:
    return WeightLedger(weights.__getitem__)


def _small(seed: int, scale: float = 1e-3) -> torch.Tensor:
    return torch.randn(8, 16, generator=torch.Generator().manual_seed(seed)) * scale


def test_bf16_weights_are_written_from_the_fp32_master():
    weights = _weights()
    original = weights[0].detach().float().clone()
    ledger = _ledger(weights)
    naive = weights[0].detach().clone()
    total = torch.zeros(8, 16)
    for i in range(20):
        delta = _small(i)
        ledger.add(0, delta)
        total = total + delta
        naive += delta.to(torch.bfloat16)  # what writing into the bf16 weight would do
    assert torch.equal(ledger.deltas[0], total)
    assert torch.equal(ledger.master(0), original + total)
    assert torch.equal(weights[0], (original + total).to(torch.bfloat16))
    assert not torch.equal(naive, weights[0])  # small updates vanish in bf16 rounding without the master
    assert ledger.edited() == [0] and 0 in ledger and 1 not in ledger and not ledger.is_empty()


def test_an_update_with_gradient_history_is_kept_without_it():
    weights = _weights(torch.float32)
    ledger = _ledger(weights)
    delta = _small(1).requires_grad_(True)
    ledger.add(0, delta * 2)
    assert not ledger.deltas[0].requires_grad and not ledger.master(0).requires_grad


def test_master_and_original_of_an_unedited_weight_are_copies():
    weights = _weights(torch.float32)
    ledger = _ledger(weights)
    for read in (ledger.master(1), ledger.original(1)):
        assert torch.equal(read, weights[1]) and read.dtype == torch.float32
        read += 1.0
    assert not torch.equal(ledger.master(1), weights[1] + 1.0)  # the model's weight was not touched
    assert ledger.is_empty()


def test_rollback_and_restore_are_exact():
    weights = _weights()
    before = {k: w.detach().clone() for k, w in weights.items()}
    ledger = _ledger(weights)
    ledger.add(0, _small(1))
    after_first = {k: w.detach().clone() for k, w in weights.items()}
    deltas = ledger.deltas
    snapshot = ledger.snapshot()
    ledger.add(0, _small(2))  # an edited weight changes again
    ledger.add(2, _small(3))  # a new one is edited
    assert torch.equal(deltas[0], _small(1))  # deltas taken earlier keep their values
    ledger.rollback(snapshot)
    assert all(torch.equal(weights[k], after_first[k]) for k in weights)
    assert ledger.edited() == [0] and torch.equal(ledger.deltas[0], deltas[0])
    ledger.add(2, _small(3))  # the rolled-back key starts again from its original
    assert torch.equal(ledger.original(2), before[2].float())
    ledger.restore()
    assert all(torch.equal(weights[k], before[k]) for k in weights)
    assert ledger.is_empty() and ledger.deltas == {}


def test_saved_updates_give_the_same_weights_on_a_fresh_model(tmp_path):
    weights = _weights()
    ledger = _ledger(weights)
    for i, key in enumerate([2, 0, 2]):
        ledger.add(key, _small(i, 1e-2))
    save_file(ledger.tensors(), tmp_path / "deltas.safetensors")
    assert sorted(load_file(tmp_path / "deltas.safetensors")) == ["delta.0", "delta.2"]

    fresh = _weights()
    loaded = _ledger(fresh)
    loaded.add(1, _small(9))  # loading restores what was there first
    loaded.load(load_file(tmp_path / "deltas.safetensors"), key_of=int)
    assert all(torch.equal(fresh[k], weights[k]) for k in weights)
    assert sorted(loaded.edited()) == [0, 2]
    assert all(torch.equal(loaded.deltas[k], ledger.deltas[k]) for k in (0, 2))


def test_string_keys_and_another_prefix():
    weights = {"a.weight": torch.nn.Parameter(torch.ones(2, 2), requires_grad=False)}
    ledger = WeightLedger(weights.__getitem__)
    ledger.add("a.weight", torch.full((2, 2), 0.5))
    saved = ledger.tensors(prefix="shift.")
    assert list(saved) == ["shift.a.weight"]
    ledger.restore()
    ledger.load(saved, key_of=str, prefix="shift.")
    assert torch.equal(weights["a.weight"], torch.full((2, 2), 1.5))


def test_replace_makes_a_trained_weight_the_master():
    """FT's case: the batch trains the fp32 masters themselves."""
    weights = _weights()
    original = weights[1].detach().float().clone()
    ledger = _ledger(weights)
    trained = original + _small(4, 1e-2)
    ledger.replace(1, trained)
    assert torch.equal(ledger.deltas[1], trained - original)
    assert torch.equal(weights[1], (original + (trained - original)).to(torch.bfloat16))
    again = ledger.master(1) + _small(5, 1e-2)
    ledger.replace(1, again)  # the original stays the one before the first edit
    assert torch.equal(ledger.original(1), original) and torch.equal(ledger.deltas[1], again - original)


def test_set_delta_replaces_an_edited_weights_update():
    weights = _weights()
    ledger = _ledger(weights)
    ledger.add(0, _small(1))
    ledger.set_delta(0, _small(2).double())
    assert ledger.deltas[0].dtype == torch.float32 and torch.equal(ledger.deltas[0], _small(2))
    assert torch.equal(weights[0], (ledger.original(0) + _small(2)).to(torch.bfloat16))
    with pytest.raises(KeyError):
        ledger.set_delta(1, _small(3))


# ---------------------------------------------------------------- states saved before the ledger


def _fixture_maker():
    spec = importlib.util.spec_from_file_location("saved_states_make", FIXTURES / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("case", [c[0] for c in _fixture_maker().CASES])
def test_a_state_saved_before_the_ledger_loads_to_the_same_weights(case, tmp_path):
    make = _fixture_maker()
    _, method, overrides, dtype, include_stats = next(c for c in make.CASES if c[0] == case)
    torch.set_num_threads(1)
    lm = make.model(dtype)
    before = {k: v.clone() for k, v in lm.model.state_dict().items()}
    editor = make.editor(method, lm, overrides, stats=None)
    editor.load_state(FIXTURES / case)

    expected = load_file(FIXTURES / f"{case}.weights.safetensors")
    for name, value in lm.model.state_dict().items():
        assert torch.equal(value, expected.get(name, before[name])), name
    saved = load_file(FIXTURES / case / "deltas.safetensors")
    assert sorted(f"delta.{k}" for k in editor.deltas) == sorted(saved)
    assert all(torch.equal(editor.deltas[k], saved[f"delta.{k}"]) for k in editor.deltas)

    # Saved again, the weight files are the same bytes.
    editor.save_state(tmp_path / "again", include_stats=include_stats)
    for file in ("deltas.safetensors", "preserved.safetensors", "stats.safetensors"):
        if (FIXTURES / case / file).exists():
            assert (tmp_path / "again" / file).read_bytes() == (FIXTURES / case / file).read_bytes(), file
    editor.restore()
    assert all(torch.equal(v, before[k]) for k, v in lm.model.state_dict().items())
