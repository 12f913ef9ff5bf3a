"""Tokenization helpers on offline tokenizers of three kinds: GPT-2-style byte-level BPE
(leading-space tokens, no BOS), Llama-style metaspace with BOS, and a ChatML tokenizer."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, models, processors
from transformers import PreTrainedTokenizerFast

from editprobe.models import TokenizationError, continuation_ids, encode, make_batch, subject_last_index
from editprobe.models.tiny import CHATML_TEMPLATE, offline_tokenizer, tiny_model
from editprobe.models.tokens import (
    char_span_of_subject,
    chat_prompt,
    chat_subject_text,
    encode_plain,
    join_target,
)

QUERY = "The mother tongue of Danielle Darrieux is"


@pytest.fixture(scope="module")
def bpe():
    return offline_tokenizer("bpe")


@pytest.fixture(scope="module")
def spm():
    return offline_tokenizer("sentencepiece")


@pytest.fixture(scope="module")
def chatml():
    return offline_tokenizer("bpe", chat_template=True)


@pytest.fixture(scope="module")
def spm_chat():
    """BOS-adding tokenizer whose template writes the BOS itself (like Llama-3's)."""
    tok = offline_tokenizer("sentencepiece", chat_template=True)
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    return tok


def _tok(request, name):
    return request.getfixturevalue(name)


# --- continuation ids -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bpe", "spm", "chatml"])
@pytest.mark.parametrize("target", ["French", "Paris", "Steve Jobs", "Toyota's"])
def test_continuation_is_full_minus_query(request, name, target):
    tok = _tok(request, name)
    full = encode(tok, QUERY + " " + target)
    prefix = encode(tok, QUERY)
    cont = continuation_ids(tok, QUERY, target)
    assert cont == full[len(prefix):]
    assert full[: len(prefix)] == prefix
    assert tok.decode(cont).strip() == target


def test_continuation_is_not_the_target_encoded_alone(bpe, spm):
    # BPE: alone, "French" has no leading-space token.
    assert continuation_ids(bpe, QUERY, "French") != encode(bpe, "French")
    assert bpe.convert_ids_to_tokens(continuation_ids(bpe, QUERY, "French")) == ["ĠFrench"]
    # Llama style: alone, the target gets a BOS.
    alone = encode(spm, "French")
    assert alone[0] == spm.bos_token_id
    cont = continuation_ids(spm, QUERY, "French")
    assert spm.bos_token_id not in cont
    assert spm.convert_ids_to_tokens(cont) == ["▁French"]


def test_continuation_in_a_rendered_chat_prompt(chatml):
    query = chat_prompt(chatml, "What is the native language of Pablo Picasso?")
    assert query.endswith("<|im_start|>assistant\n")
    cont = continuation_ids(chatml, query, "Spanish")
    # The answer starts a line: no space is put between the newline and the target.
    assert cont == encode(chatml, query + "Spanish")[len(encode(chatml, query)):]
    assert chatml.decode(cont) == "Spanish"
    assert continuation_ids(chatml, query, " Spanish") != cont  # an explicit space is kept


def test_join_target():
    assert join_target("Paris is in", "France") == "Paris is in France"
    assert join_target("Paris is in", " France") == "Paris is in France"
    assert join_target("Paris is in", "\nFrance") == "Paris is in\nFrance"
    assert join_target("assistant\n", "France") == "assistant\nFrance"


@pytest.mark.parametrize("name", ["bpe", "spm"])
def test_a_target_with_its_own_space_is_not_doubled(request, name):
    tok = _tok(request, name)
    assert continuation_ids(tok, QUERY, " French") == continuation_ids(tok, QUERY, "French")


@pytest.mark.parametrize("target", ["", "   "])
def test_empty_target_raises(bpe, target):
    with pytest.raises(TokenizationError, match="empty target"):
        continuation_ids(bpe, QUERY, target)


def test_a_merge_across_the_boundary_raises():
    # No pre-tokenizer and a merge "is" + " " -> "is ": the query's last token changes
    # once the target follows, as with tokenizers that do not split at spaces.
    vocab = {c: i for i, c in enumerate(["i", "s", " ", "P", "a", "r", "is", "is "])}
    merging = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.BPE(vocab=vocab, merges=[("i", "s"), ("is", " ")])))
    with pytest.raises(TokenizationError, match="merges"):
        continuation_ids(merging, "is", "Paris")


def test_eos_appended_to_every_encoding_stays_out(spm):
    tok = offline_tokenizer("sentencepiece")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", tok.bos_token_id), ("</s>", tok.eos_token_id)]
    )
    assert encode(tok, QUERY)[-1] == tok.eos_token_id
    assert continuation_ids(tok, QUERY, "French") == continuation_ids(spm, QUERY, "French")


# --- subject's last token ---------------------------------------------------------------

CASES = [
    ("{} is located in", "Danielle Darrieux"),  # start
    ("The mother tongue of {} is", "Danielle Darrieux"),  # middle
    ("Apple was developed by {}", "Steve Jobs"),  # end
    ("{}, that was developed by", "Apple"),  # followed by punctuation
    ("{}'s official language is", "Italy"),  # followed by an apostrophe
    ("What is the native language of {}?", "Pablo Picasso"),
]


def _check_subject_index(tok, text, idx, start, end, add_special_tokens=True) -> list[int]:
    """The token at idx holds the subject's last character; no later token starts inside
    the subject; decoding up to idx, and not before, gives the whole subject."""
    enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    s, e = offsets[idx]
    assert s <= end - 1 < e, (offsets, idx)
    assert all(o[0] >= end for o in offsets[idx + 1:] if o[0] != o[1])
    subject = text[start:end]
    assert subject in tok.decode(ids[: idx + 1]) and subject not in tok.decode(ids[:idx])
    return ids


@pytest.mark.parametrize("name", ["bpe", "spm"])
@pytest.mark.parametrize("template,subject", CASES)
def test_subject_last_index(request, name, template, subject):
    tok = _tok(request, name)
    text = template.format(subject)
    start, end = char_span_of_subject(template, subject)
    assert text[start:end] == subject
    idx = subject_last_index(tok, text, end)
    assert _check_subject_index(tok, text, idx, start, end) == encode(tok, text)


def test_subject_index_counts_the_bos(spm, bpe):
    template, subject = "The mother tongue of {} is", "Danielle Darrieux"
    text = template.format(subject)
    end = char_span_of_subject(template, subject)[1]
    with_bos = subject_last_index(spm, text, end)
    ids = encode(spm, text)
    assert ids[0] == spm.bos_token_id
    assert spm.convert_ids_to_tokens(ids)[with_bos] == "▁Darrieux"
    without_bos = subject_last_index(bpe, text, end)
    assert bpe.convert_ids_to_tokens(encode(bpe, text))[without_bos] == "ĠDarrieux"
    assert with_bos == len(ids) - 2  # "<s> ... ▁Darrieux ▁is": BOS counted, "is" after it


def test_multi_token_subject_gives_its_last_piece(bpe):
    # At the start of the text the byte-level BPE has no "Danielle" token: it splits it.
    text = "Danielle Darrieux is located in"
    first = subject_last_index(bpe, text, len("Danielle"))
    pieces = bpe.convert_ids_to_tokens(encode(bpe, text))
    assert len(pieces[: first + 1]) > 1 and "".join(pieces[: first + 1]) == "Danielle"
    assert pieces[subject_last_index(bpe, text, len("Danielle Darrieux"))] == "ĠDarrieux"


@pytest.mark.parametrize("name", ["chatml", "spm_chat"])
@pytest.mark.parametrize("template,subject", CASES[:4])
def test_subject_index_inside_a_chat_template(request, name, template, subject):
    tok = _tok(request, name)
    rendered, start, end = chat_subject_text(tok, template, subject)
    assert rendered[start:end] == subject
    assert rendered.index(template.format(subject)) > rendered.index("<|im_start|>user")
    idx = subject_last_index(tok, rendered, end, add_special_tokens=False)
    ids = _check_subject_index(tok, rendered, idx, start, end, add_special_tokens=False)
    assert ids == encode_plain(tok, rendered)


def test_chat_template_with_bos_is_not_doubled(spm_chat):
    rendered, _, end = chat_subject_text(spm_chat, "{} is located in", "Danielle Darrieux")
    assert rendered.startswith("<s>")
    plain = encode_plain(spm_chat, rendered)
    assert plain.count(spm_chat.bos_token_id) == 1
    # The trap the add_special_tokens flag exists for: encoding again adds a second BOS
    # and shifts every index by one.
    assert encode(spm_chat, rendered)[:2] == [spm_chat.bos_token_id] * 2
    assert subject_last_index(spm_chat, rendered, end, add_special_tokens=True) == \
        subject_last_index(spm_chat, rendered, end, add_special_tokens=False) + 1


def test_chat_prompt_without_template_is_the_message(spm):
    assert chat_prompt(spm, "Hello there") == "Hello there"
    assert chat_subject_text(spm, "{} plays", "Michael Jordan") == ("Michael Jordan plays", 0, 14)


def test_chat_prompt_system_message(chatml):
    default = chat_prompt(chatml, "Hi")
    assert "You are a helpful assistant." in default and default.endswith("<|im_start|>assistant\n")
    custom = chat_prompt(chatml, "Hi", system="Answer briefly.")
    assert "Answer briefly." in custom and "helpful assistant" not in custom


def test_char_span_handles_escaped_braces_and_rejects_bad_templates():
    template = "{{note}} {} is"
    start, end = char_span_of_subject(template, "Apple")
    assert template.format("Apple")[start:end] == "Apple"
    with pytest.raises(TokenizationError, match="no '{}'"):
        char_span_of_subject("no placeholder", "Apple")
    with pytest.raises(TokenizationError, match="must use"):
        char_span_of_subject("{subject} is", "Apple")


# --- padding ----------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["left", "right"])
def test_batch_positions_under_padding(spm, side):
    texts = [("{} is located in", "Danielle Darrieux"), ("Apple was developed by {}", "Steve Jobs")]
    seqs, idxs = [], []
    for template, subject in texts:
        text = template.format(subject)
        seqs.append(encode(spm, text))
        idxs.append(subject_last_index(spm, text, char_span_of_subject(template, subject)[1]))
    batch = make_batch(spm, seqs, padding_side=side)
    width = max(map(len, seqs))
    assert batch.input_ids.shape == (2, width) and batch.lengths == [len(s) for s in seqs]
    for row, (seq, idx) in enumerate(zip(seqs, idxs)):
        assert batch.input_ids[row, batch.position(row, idx)].item() == seq[idx]
        assert batch.input_ids[row, batch.last_position(row)].item() == seq[-1]
        real = batch.attention_mask[row].nonzero().flatten().tolist()
        assert real == [batch.position(row, i) for i in range(len(seq))]
    short = min(range(2), key=lambda r: len(seqs[r]))
    pad_count = width - len(seqs[short])
    assert pad_count > 0
    expected = idxs[short] + (pad_count if side == "left" else 0)
    assert batch.position(short, idxs[short]) == expected


@pytest.mark.parametrize("model_type", ["gpt2", "llama"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_forward_matches_unpadded(model_type, side):
    """With position_ids() a padded row gives the unpadded logits at mapped positions."""
    model, tok, _ = tiny_model(model_type)
    seqs = [encode(tok, QUERY), encode(tok, "Apple was developed by")]
    batch = make_batch(tok, seqs, padding_side=side)
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids()).logits
    for row, seq in enumerate(seqs):
        alone = model(torch.tensor([seq])).logits[0]
        got = torch.stack([out[row, batch.position(row, i)] for i in range(len(seq))])
        torch.testing.assert_close(got, alone, rtol=1e-4, atol=1e-4)


def test_make_batch_rejects_a_bad_side(spm):
    with pytest.raises(ValueError, match="'left' or 'right'"):
        make_batch(spm, [[1, 2]], padding_side="middle")
