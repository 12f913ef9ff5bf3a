"""Keys read from rows cut at the edited token, length-sorted and chunked, equal those read
from each full prompt alone."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import fresh, random_edits

from editprobe.editing.lte.keys import read_at_subject
from editprobe.editing.prompts import key_rows
from editprobe.models.hooks import capture

TEMPLATES = ["{}", "The cat is on the mat. {}", "Because. {}"]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("locate", ["subject", "last-token"])
def test_keys_equal_full_prompts_read_alone(model_type, locate):
    lm = fresh(model_type)
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    requests = random_edits(5, seed=3)
    ins, outs, rows = read_at_subject(model, tok, adapter, requests, TEMPLATES, [1, 2], {"block": 2},
                                      rows_per_pass=4, locate=locate)
    assert rows == key_rows(tok, requests, TEMPLATES, locate)
    for i, row in enumerate(rows):
        paths = [adapter.path("mlp_out", 1), adapter.path("mlp_out", 2)]
        with torch.no_grad(), capture(model, paths, what="input") as got_in, \
                capture(model, [adapter.path("block", 2)]) as got_out:
            model(input_ids=torch.tensor([row.ids]))
        at = row.subject_index
        torch.testing.assert_close(ins[1][i], got_in[paths[0]][0, at].float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(ins[2][i], got_in[paths[1]][0, at].float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outs["block"][i], got_out[adapter.path("block", 2)][0, at].float(),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", ["memit", "emmet", "alphaedit", "rect", "prune", "pmet", "adaedit", "namet",
                                    "memit_lti"])
def test_preserved_keys_are_the_edited_models_keys(method, tmp_path_factory):
    # after_batch reuses the keys the solves read (each after the lower layers' writes):
    # they must equal the keys read again on the edited model.
    from test_engine_helpers import corpus, store

    from editprobe.editing import make_editor
    from editprobe.editing.lte.keys import compute_keys

    lm = fresh("llama")
    editor = make_editor(method, lm.model, lm.tokenizer, "tiny", stats=store(tmp_path_factory), corpus=corpus(),
                         overrides={"preserve_previous": True})
    if not editor.uses_preserved_keys:
        pytest.skip(f"{method} keeps no preserved keys")
    requests = random_edits(4, seed=5)
    editor.apply(requests)
    keys, _ = compute_keys(lm.model, lm.tokenizer, lm.adapter, requests, editor.templates(), editor.layers)
    for layer in editor.layers:
        k = keys[layer].double()
        torch.testing.assert_close(editor.preserved(layer), k @ k.T, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_key_replay_starts_at_the_last_written_block(model_type):
    from editprobe.editing.lte.keys import KeyReplay

    lm = fresh(model_type)
    model, tok, adapter = lm.model, lm.tokenizer, lm.adapter
    requests = random_edits(5, seed=4)
    replay = KeyReplay()
    read_at_subject(model, tok, adapter, requests, TEMPLATES, [1], {"block": 3}, rows_per_pass=4, replay=replay)
    assert replay.block == 1 and len(replay.inputs) == 4  # 15 rows in chunks of 4
    with torch.no_grad():  # a write at the stored block: what lies below it is unchanged
        model.get_submodule(adapter.path("mlp_out", 1)).weight.mul_(1.5)
    calls = []
    handle = adapter.block(model, 0).register_forward_hook(lambda *a: calls.append(1))
    try:
        replayed = read_at_subject(model, tok, adapter, requests, TEMPLATES, [2], {"block": 3}, rows_per_pass=4,
                                   replay=replay)
    finally:
        handle.remove()
    assert not calls  # block 0 never ran
    plain = read_at_subject(model, tok, adapter, requests, TEMPLATES, [2], {"block": 3}, rows_per_pass=4)
    torch.testing.assert_close(replayed[0][2], plain[0][2], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(replayed[1]["block"], plain[1]["block"], rtol=1e-6, atol=1e-6)
    assert replay.block == 2
