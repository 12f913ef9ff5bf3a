"""Batched greedy decoding with left padding, shared by every probe that needs text.

Left padding puts every prompt's last token in the last column, so one ``generate()`` call
continues all rows at once. ``generate()`` derives position ids from the attention mask,
so left-padded rows are numbered from their first real token (GPT-2 would otherwise count
the pads); tests check that a batch decodes exactly like one prompt at a time.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch

from ..models.tokens import encode_open, encode_plain, make_batch, pad_id


def query_ids(tok, query: str) -> list[int]:
    """The ids of a plain-text query exactly as :func:`continuation_ids` sees its prefix
    (special tokens added, an auto-appended EOS dropped), so a query and the continuation
    measured after it always line up."""
    return encode_open(tok, query)


def prompt_ids(tok, text: str, rendered_chat: bool) -> list[int]:
    """Ids of a prompt: a rendered chat template already holds its special tokens."""
    return encode_plain(tok, text) if rendered_chat else query_ids(tok, text)


def _eos_ids(model, tok) -> set[int]:
    """Every id that ends a turn: the model's generation config may list several
    (Llama-3-Instruct: <|end_of_text|> and <|eot_id|>), the tokenizer names one."""
    ids: set[int] = set()
    for source in (getattr(getattr(model, "generation_config", None), "eos_token_id", None), tok.eos_token_id):
        if isinstance(source, int):
            ids.add(source)
        elif source is not None:
            ids.update(int(i) for i in source)
    return ids


def _greedy_config(model, tok, max_new_tokens: int, stop_at_eos: bool, top_k: int | None = None):
    """The model's generation config made greedy. Copied, not replaced, so it keeps the
    model's own EOS ids; sampling knobs are cleared so a chat model's default temperature
    neither applies nor warns."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None)
    cfg = copy.deepcopy(base) if base is not None else GenerationConfig()
    cfg.do_sample = top_k is not None
    cfg.num_beams = 1
    cfg.temperature = None
    cfg.top_p = None
    cfg.top_k = top_k
    cfg.max_new_tokens = max_new_tokens
    cfg.min_new_tokens = None
    cfg.max_length = None
    cfg.pad_token_id = pad_id(tok)
    eos = sorted(_eos_ids(model, tok))
    # Without EOS ids generate() runs the full length: what "decode exactly n tokens" needs.
    cfg.eos_token_id = eos if (stop_at_eos and eos) else None
    return cfg


@torch.no_grad()
def greedy_decode(
    model,
    tok,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    stop_at_eos: bool = True,
    top_k: int | None = None,
) -> list[list[int]]:
    """Greedy continuation ids of each prompt (ids, special tokens included); with
    ``top_k``, sampled from the k likeliest tokens instead (seed torch first).

    With ``stop_at_eos`` a row ends with (and keeps) its first EOS; nothing after it is
    returned, in particular not the padding a batch adds to rows that finished early."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, not {max_new_tokens}")
    device = next(model.parameters()).device
    cfg = _greedy_config(model, tok, max_new_tokens, stop_at_eos, top_k)
    eos = _eos_ids(model, tok) if stop_at_eos else set()
    results: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = [list(p) for p in prompts[start : start + batch_size]]
        if any(not p for p in chunk):
            raise ValueError("cannot decode after an empty prompt")
        batch = make_batch(tok, chunk, "left").to(device)
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, generation_config=cfg)
        for row in out[:, batch.input_ids.shape[1] :].tolist():
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            results.append(row[:cut])
    return results


def decode_text(tok, ids: Sequence[int]) -> str:
    """Readable text of generated ids, special tokens (EOS) left out."""
    return tok.decode(list(ids), skip_special_tokens=True)
