"""The real built-in model (SmolLM2-135M-Instruct): behaviour the tiny models cannot show."""

from __future__ import annotations

import pytest
import torch

from editprobe.models import builtin as builtin_mod
from editprobe.models import chat_prompt, continuation_ids, encode, load_model, pull, subject_last_index
from editprobe.models.tokens import char_span_of_subject, chat_subject_text, encode_plain

pytestmark = pytest.mark.integration


def _next_token_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0, -1]


def test_layout_of_the_builtin(smollm2):
    model, tok, adapter = smollm2
    assert adapter.model_type == "llama"
    assert (adapter.n_layers(model), adapter.d_model(model), adapter.d_ff(model)) == (30, 576, 1536)
    # Tied embeddings: the rebuilt model must share the head with the embedding, not hold
    # a random head (what a silently failed load_state_dict would leave).
    assert adapter.module(model, "lm_head").weight.data_ptr() == adapter.module(model, "embed").weight.data_ptr()
    assert not model.training


def test_greedy_answer_to_the_capital_of_france(smollm2):
    model, tok, _ = smollm2
    query = "The capital of France is"
    paris = continuation_ids(tok, query, "Paris")
    logits = _next_token_logits(model, encode(tok, query))
    assert logits.argmax().item() == paris[0]
    assert tok.decode(paris[:1]) == " Paris"
    ids = torch.tensor([encode(tok, query)])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False,
                         pad_token_id=tok.pad_token_id)
    assert tok.decode(out[0, ids.shape[1]:]).startswith(" Paris")


def test_chat_template_renders_and_the_model_answers_in_it(smollm2):
    model, tok, _ = smollm2
    rendered = chat_prompt(tok, "What is the capital of France?")
    assert rendered.startswith("<|im_start|>system\n")
    assert rendered.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    ids = encode_plain(tok, rendered)
    assert ids == encode(tok, rendered)  # SmolLM2 adds no BOS of its own, so both agree
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    # The greedy answer is "The capital of France is Paris."; teacher-force it in one pass
    # and check every step is the argmax (cheaper than generating on a CPU).
    answer = continuation_ids(tok, rendered, "The capital of France is Paris")
    assert tok.decode(answer) == "The capital of France is Paris"
    with torch.no_grad():
        logits = model(torch.tensor([ids + answer])).logits[0]
    predicted = logits[len(ids) - 1: len(ids) + len(answer) - 1].argmax(-1).tolist()
    assert predicted == answer


def test_subject_index_on_the_real_tokenizer(smollm2):
    _, tok, _ = smollm2
    template, subject = "The mother tongue of {} is", "Danielle Darrieux"
    text = template.format(subject)
    idx = subject_last_index(tok, text, char_span_of_subject(template, subject)[1])
    pieces = tok.convert_ids_to_tokens(encode(tok, text))
    # "Danielle Darrieux" is several pieces here; the index is the last one, before " is".
    assert pieces[idx] == "ux" and pieces[idx + 1] == "Ġis"
    assert tok.decode(encode(tok, text)[: idx + 1]).endswith("Darrieux")

    rendered, _, end = chat_subject_text(tok, "{}, that was developed by", "Apple")
    chat_idx = subject_last_index(tok, rendered, end, add_special_tokens=False)
    chat_pieces = tok.convert_ids_to_tokens(encode_plain(tok, rendered))
    assert chat_pieces[chat_idx - 1: chat_idx + 2] == ["Ċ", "Apple", ","]


def test_second_load_reads_the_cache(smollm2, monkeypatch):
    def no_rebuild(*_a, **_k):
        raise AssertionError("the cached model was rebuilt from the GGUF")

    monkeypatch.setattr(builtin_mod, "_find_gguf", no_rebuild)
    path = pull("smollm2-135m")
    assert (path / "model.safetensors").is_file() and (path / "tokenizer.json").is_file()
    again = load_model("smollm2-135m")
    name = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(again.model.get_parameter(name), smollm2.model.get_parameter(name))
