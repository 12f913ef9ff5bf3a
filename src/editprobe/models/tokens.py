"""Tokenization helpers every later stage relies on.

Two traps this module exists to avoid:
- encoding a target alone gives different ids than the target *as a continuation* of the
  query (leading-space tokens, BOS); continuation ids are always ``encode(query + " " +
  target)`` minus ``encode(query)``, with the prefix checked (no space is added after a
  newline, see :func:`join_target`);
- locating the subject by re-encoding substrings breaks with BOS, chat templates and
  padding; the subject's last token is found through the offset mapping instead.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import torch
from ..errors import UserError


class TokenizationError(UserError, ValueError):
    pass


def _encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=True)["input_ids"]


def encode_open(tok, text: str) -> list[int]:
    """``_encode`` without an EOS the tokenizer appends to every encoding: the query's
    EOS would break the prefix check, the full text's would end up in the continuation."""
    ids = _encode(tok, text)
    eos = tok.eos_token_id
    if eos is not None and ids and ids[-1] == eos and not text.endswith(str(tok.eos_token)):
        ids = ids[:-1]
    return ids


def join_target(query: str, target: str) -> str:
    """``query + " " + target`` without doubling a space the target already has, and with
    no space at the start of a line: a rendered chat prompt ends in a newline
    ("<|im_start|>assistant\n") and chat models answer there without a leading space."""
    if target[:1].isspace() or query.endswith("\n"):
        return query + target
    return query + " " + target


def continuation_ids(tok, query: str, target: str) -> list[int]:
    """Token ids of ``target`` as it continues ``query`` (lm-eval-harness style)."""
    if not target.strip():
        raise TokenizationError(f"empty target after query {query!r}")
    prefix = encode_open(tok, query)
    full = encode_open(tok, join_target(query, target))
    if full[: len(prefix)] != prefix:
        raise TokenizationError(
            f"the tokenization of {query!r} changes when {target!r} follows it; "
            "the query's last token merges with the target"
        )
    cont = full[len(prefix) :]
    if not cont:
        raise TokenizationError(f"target {target!r} adds no tokens after {query!r}")
    return cont


def char_span_of_subject(template: str, subject: str) -> tuple[int, int]:
    """Character span of the subject in ``template.format(subject)`` (first ``{}``)."""
    # Parse rather than str.index: escaped braces ("{{") shrink to one character.
    start = 0
    for literal, field, _, _ in string.Formatter().parse(template):
        start += len(literal)
        if field is not None:
            if field != "":
                raise TokenizationError(f"template {template!r} must use '{{}}' for the subject, not {{{field}}}")
            return start, start + len(subject)
    raise TokenizationError(f"template {template!r} has no '{{}}' for the subject")


def token_index_at_char(offsets: list[tuple[int, int]], char_pos: int, special_mask: list[int] | None = None) -> int:
    """Index of the token whose span contains ``char_pos``; if none does (a space the
    tokenizer folded into the next token), the last token that starts before it."""
    best = None
    for i, (s, e) in enumerate(offsets):
        if special_mask is not None and special_mask[i]:
            continue
        if s == e:
            continue
        if s <= char_pos < e:
            return i
        if s <= char_pos:
            best = i
    if best is None:
        raise TokenizationError(f"no token covers character {char_pos}")
    return best


def subject_last_index(tok, text: str, subject_end_char: int, add_special_tokens: bool = True) -> int:
    """Index (in the unpadded encoding of ``text``, special tokens included) of the token
    holding the subject's last character, found through the offset mapping. Pass
    ``add_special_tokens=False`` for text rendered by a chat template (it has its own)."""
    enc = tok(
        text, add_special_tokens=add_special_tokens, return_offsets_mapping=True, return_special_tokens_mask=True
    )
    if "offset_mapping" not in enc:
        raise TokenizationError("the tokenizer gives no offset mapping; use a fast tokenizer")
    return token_index_at_char(enc["offset_mapping"], subject_end_char - 1, enc["special_tokens_mask"])


@dataclass
class Batch:
    """Padded token ids with per-row lengths, the unit every forward pass consumes."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    lengths: list[int]
    padding_side: str

    def position(self, row: int, index_in_unpadded: int) -> int:
        """Position of an unpadded-sequence index inside the padded row."""
        if self.padding_side == "left":
            return index_in_unpadded + (self.input_ids.shape[1] - self.lengths[row])
        return index_in_unpadded

    def last_position(self, row: int) -> int:
        return self.position(row, self.lengths[row] - 1)

    def position_ids(self) -> torch.Tensor:
        """Positions counted over real tokens only. Pass them with left padding: some
        architectures (GPT-2) otherwise number the pad tokens too and shift every row."""
        return (self.attention_mask.cumsum(dim=1) - 1).clamp(min=0)

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.lengths, self.padding_side)


def pad_id(tok) -> int:
    if tok.pad_token_id is not None:
        return tok.pad_token_id
    if tok.eos_token_id is not None:
        return tok.eos_token_id
    return 0


def make_batch(tok, sequences: list[list[int]], padding_side: str = "right") -> Batch:
    """Pad lists of token ids into one batch (no re-tokenization, so ids are exact)."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', not {padding_side!r}")
    width = max(len(s) for s in sequences)
    pid = pad_id(tok)
    ids = torch.full((len(sequences), width), pid, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        sl = slice(width - len(seq), width) if padding_side == "left" else slice(0, len(seq))
        ids[i, sl] = torch.tensor(seq, dtype=torch.long)
        mask[i, sl] = 1
    return Batch(ids, mask, [len(s) for s in sequences], padding_side)


def encode(tok, text: str) -> list[int]:
    return _encode(tok, text)


def open_ids(tok, text: str) -> list[int]:
    """Ids of a prompt that a continuation will follow (no auto-appended EOS), exactly the
    prefix :func:`continuation_ids` measures after."""
    return encode_open(tok, text)


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def chat_prompt(tok, user_message: str, system: str | None = None) -> str:
    """The text the model sees for one user turn, ready for the assistant's answer.
    Without a chat template the message is returned unchanged. ``system=None`` keeps the
    template's own default system prompt."""
    if not has_chat_template(tok):
        return user_message
    messages = ([{"role": "system", "content": system}] if system is not None else []) + [
        {"role": "user", "content": user_message}
    ]
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def chat_subject_text(tok, template: str, subject: str, system: str | None = None) -> tuple[str, int, int]:
    """``template.format(subject)`` as one rendered user turn, with the subject's character
    span inside the rendered text: pass the end to :func:`subject_last_index` with
    ``add_special_tokens=False``."""
    message = template.format(subject)
    rendered = chat_prompt(tok, message, system)
    # The user turn is the last place the message occurs (a system prompt may precede it).
    start = rendered.rfind(message) + char_span_of_subject(template, subject)[0]
    return rendered, start, start + len(subject)


def encode_plain(tok, text: str) -> list[int]:
    """Encode text that already contains its special tokens (a rendered chat template):
    adding BOS again would double it."""
    return tok(text, add_special_tokens=False)["input_ids"]
