"""One engine for every prompt-based probe: each prompt is run once into a KV cache, then
(a) its teacher-forced continuations are scored from that cache and (b) its greedy
continuation is decoded from it; nothing is fed twice.

What makes it cheap on a CPU, where a forward costs about its token count:
- prompts are sorted by length and cut into batches by a token budget, the cuts chosen to
  minimize padding plus the fixed cost of each forward (not a fixed count);
- the batches' caches are merged, so the teacher-forced suffix pass and every decode step
  (each a read of all weights, whatever the row count) serve all prompts at once;
- the longest prefix shared by all prompts (a chat template's system turn and instruction)
  is run once and its keys and values repeated per row;
- a one-token continuation is read off the prompt's last logits (no suffix row);
- vocabulary logits are computed only at the positions that are scored.

Layout of a row: [shared prefix][left padding][rest of the prompt][continuation or decoded
tokens]. Padding is masked and positions are explicit, so each row computes what it would
alone (tests compare against one prompt at a time)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..models.decoding import decoding_from
from ..models.tokens import make_batch

TOKEN_BUDGET = 4096  # padded prompt tokens per forward
# A forward's fixed cost in tokens of compute: on a CPU, reading every weight once costs
# about as much as 20-30 tokens (SmolLM2-135M, one core).
CALL_TOKENS = 32
MIN_SHARED = 4  # a shared prefix shorter than this is not worth a separate pass
# Cached tokens (rows × width) merged into one group: its suffix passes and decode steps
# each read the weights once for all its rows. 16k tokens: 0.75 GB of float32 keys and
# values at SmolLM2-135M, 2 GB of bfloat16 at Llama-3-8B.
CACHE_TOKENS = 16384


@dataclass
class Timer:
    """Seconds spent decoding (beyond the prompt pass): `make bench` reports free generation
    apart from teacher-forced scoring."""

    decode_s: float = 0.0
    forwards: int = 0
    tokens: int = 0  # padded tokens fed, decode steps included
    decoded: int = 0  # tokens fed by decode steps

    def reset(self) -> None:
        self.decode_s, self.forwards, self.tokens, self.decoded = 0.0, 0, 0, 0


TIMER = Timer()


def length_batches(lengths: Sequence[int], budget: int = TOKEN_BUDGET, overhead: int = CALL_TOKENS) -> list[list[int]]:
    """Indices sorted by length and cut into batches of at most ``budget`` padded tokens
    (one row at least), the cuts chosen to minimize padded tokens + ``overhead`` per forward
    (a dynamic program over the distinct lengths)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    values = sorted(set(lengths))
    counts = [0] * len(values)
    slot = {v: k for k, v in enumerate(values)}
    for n in lengths:
        counts[slot[n]] += 1
    best, cut = [0.0] + [float("inf")] * len(values), [0] * (len(values) + 1)
    for j in range(1, len(values) + 1):
        width, rows = values[j - 1], 0
        per_call = max(1, budget // max(width, 1))
        for i in range(j - 1, -1, -1):  # the batch holds values[i:j], padded to values[j-1]
            rows += counts[i]
            cost = best[i] + rows * width + -(-rows // per_call) * overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    segments, j = [], len(values)
    while j > 0:
        segments.append((cut[j], j))
        j = cut[j]
    batches, start = [], 0
    for i, j in reversed(segments):
        rows = sum(counts[i:j])
        per_call = max(1, budget // max(values[j - 1], 1))
        end = start + rows
        batches += [order[k : min(k + per_call, end)] for k in range(start, end, per_call)]
        start = end
    return batches


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the prefix every prompt starts with, leaving each at least one own token."""
    if len(prompts) < 2:
        return 0
    first = prompts[0]
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        k = 0
        while k < n and p[k] == first[k]:
            k += 1
        n = k
    return n if n >= MIN_SHARED else 0


# Per continuation: the argmax and (or None) log p(target token) at each target position.
Scored = tuple[list[int], list[float] | None]


def _cache_with(model, kv):
    """A cache holding the given (keys, values) per layer."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    for layer, (k, v) in zip(cache.layers, kv):
        layer.lazy_initialization(k, v)
        layer.keys, layer.values = k, v
    return cache


@dataclass
class _Group:
    """Prompts run (in length batches) and merged into one left-padded cache, so suffix
    passes and decode steps, which cost a read of every weight each, serve them all."""

    idx: list[int]
    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor  # (rows, cache length)
    n_prompt: torch.Tensor  # (rows, 1): real tokens, the next position
    last: torch.Tensor  # (rows, vocab): logits after the prompt


def _merge(parts: list[_Group]) -> _Group:
    if len(parts) == 1:
        return parts[0]
    width = max(p.mask.shape[1] for p in parts)

    def left(t: torch.Tensor, dim: int) -> torch.Tensor:
        pad = [0, 0] * (t.dim() - 1 - dim) + [width - t.shape[dim], 0]
        return torch.nn.functional.pad(t, pad)

    kv = [(torch.cat([left(p.kv[n][0], 2) for p in parts]), torch.cat([left(p.kv[n][1], 2) for p in parts]))
          for n in range(len(parts[0].kv))]
    return _Group([i for p in parts for i in p.idx], kv, torch.cat([left(p.mask, 1) for p in parts]),
                  torch.cat([p.n_prompt for p in parts]), torch.cat([p.last for p in parts]))


def _prompt_pass(model, tok, prompts, idx, shared: int, prefix_kv) -> _Group:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    rest = make_batch(tok, [list(prompts[i][shared:]) for i in idx], "left").to(device)
    rows = len(idx)
    mask = rest.attention_mask
    if prefix_kv is not None:
        cache = _cache_with(model, [(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in prefix_kv])
        mask = torch.cat([torch.ones(rows, shared, dtype=mask.dtype, device=device), mask], 1)
    else:
        cache = DynamicCache(config=model.config)
    positions = (shared + rest.attention_mask.cumsum(-1) - 1).clamp(min=shared)
    last = model(input_ids=rest.input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                 use_cache=True, logits_to_keep=1).logits[:, -1]
    TIMER.forwards += 1
    TIMER.tokens += rest.input_ids.numel()
    return _Group(list(idx), [(layer.keys, layer.values) for layer in cache.layers], mask,
                  mask.sum(-1, keepdim=True), last)


def _score_suffix(model, tok, g: _Group, pairs, logprobs: bool) -> list[Scored]:
    """Teacher-force every (row, target) pair from the group's cache (chunks of
    ``CACHE_TOKENS``); one-token targets are read off the prompt's logits."""
    last = g.last
    first_lp = torch.log_softmax(last.float(), -1) if logprobs else None
    first_pred = last.argmax(-1).tolist()
    predicted = [[first_pred[r]] for r, _ in pairs]
    lps = [[float(first_lp[r, t[0]])] for r, t in pairs] if first_lp is not None else None
    long = [j for j, (_, t) in enumerate(pairs) if len(t) > 1]
    step = max(1, CACHE_TOKENS // g.mask.shape[1])
    for start in range(0, len(long), step):
        chunk = long[start : start + step]
        sel = torch.tensor([pairs[j][0] for j in chunk], device=last.device)
        cache = _cache_with(model, [(k[sel], v[sel]) for k, v in g.kv])
        suffix = make_batch(tok, [list(pairs[j][1][:-1]) for j in chunk], "right").to(last.device)
        width = suffix.input_ids.shape[1]
        mask = torch.cat([g.mask[sel], suffix.attention_mask], 1)
        with decoding_from(0):  # every continuation position is a decoding step (models/decoding.py)
            logits = model(input_ids=suffix.input_ids, attention_mask=mask,
                           position_ids=g.n_prompt[sel] + torch.arange(width, device=last.device),
                           past_key_values=cache, use_cache=True).logits.float()
        TIMER.forwards += 1
        TIMER.tokens += suffix.input_ids.numel()
        pred = logits.argmax(-1).tolist()
        if logprobs:
            targets = torch.zeros((len(chunk), width), dtype=torch.long, device=last.device)
            for row, j in enumerate(chunk):
                t = pairs[j][1]
                targets[row, : len(t) - 1] = torch.tensor(t[1:], device=last.device)
            picked = (logits.gather(2, targets[..., None])[..., 0] - logits.logsumexp(-1)).tolist()
        for row, j in enumerate(chunk):
            n = len(pairs[j][1]) - 1
            predicted[j] += pred[row][:n]
            if lps is not None:
                lps[j] += picked[row][:n]
    return [(p, lps[j] if lps is not None else None) for j, p in enumerate(predicted)]


def _decode(model, g: _Group, lengths: list[int], eos: set[int]) -> list[list[int]]:
    """Greedy tokens from the group's cache: ``lengths[r]`` per row, a row ending with (and
    keeping) its first EOS. Finished rows leave the batch."""
    start = time.perf_counter()
    out: list[list[int]] = [[] for _ in lengths]
    first = g.last.argmax(-1).tolist()
    active = []
    for r, n in enumerate(lengths):
        if n > 0:
            out[r].append(first[r])
            if n > 1 and first[r] not in eos:
                active.append(r)
    if active:
        sel = torch.tensor(active, device=g.last.device)
        cache = _cache_with(model, [(k[sel], v[sel]) for k, v in g.kv])
        mask, position = g.mask[sel], g.n_prompt[sel]
        step = torch.tensor([first[r] for r in active], device=g.last.device)
        while active:
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            logits = model(input_ids=step[:, None], attention_mask=mask, position_ids=position,
                           past_key_values=cache, use_cache=True).logits
            TIMER.forwards += 1
            TIMER.tokens += step.numel()
            TIMER.decoded += step.numel()
            step = logits[:, -1].argmax(-1)
            keep = []
            for row, (r, token) in enumerate(zip(active, step.tolist())):
                out[r].append(token)
                if len(out[r]) < lengths[r] and token not in eos:
                    keep.append(row)
            if len(keep) < len(active):
                k_sel = torch.tensor(keep, dtype=torch.long, device=g.last.device)
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[k_sel], layer.values[k_sel]
                mask, position, step = mask[k_sel], position[k_sel], step[k_sel]
                active = [active[row] for row in keep]
            position = position + 1
    TIMER.decode_s += time.perf_counter() - start
    return out


DecodeLengths = Sequence[int] | Callable[[int, list[Scored]], int]


@torch.no_grad()
def run_prompts(model, tok, prompts: Sequence[Sequence[int]],
                continuations: Sequence[Sequence[Sequence[int]]] | None = None,
                decode: DecodeLengths | None = None, eos: set[int] | None = None, logprobs: bool = True,
                budget: int = TOKEN_BUDGET) -> tuple[list[list[Scored]], list[list[int]] | None]:
    """Each prompt run once; then its ``continuations`` teacher-forced (per prompt, one
    (predicted, logprobs) per continuation) and ``decode[i]`` greedy tokens decoded after
    it, stopping after an id in ``eos``. ``decode`` may be a function of (prompt index, its
    scored continuations): decode only what scoring did not show. The model must be
    :func:`~editprobe.models.resume_forward.supports_prefix_cache`."""
    from transformers import DynamicCache

    if any(not p for p in prompts):
        raise ValueError("a prompt must have at least one token")
    conts = continuations if continuations is not None else [[] for _ in prompts]
    if any(not t for cs in conts for t in cs):
        raise ValueError("a continuation must have at least one token")
    device = next(model.parameters()).device
    shared = shared_prefix(prompts)
    prefix_kv = None
    if shared:
        cache = DynamicCache(config=model.config)
        with decoding_from(shared):  # a shared prefix ends no prompt: no decoding step in it
            model(input_ids=torch.tensor([list(prompts[0][:shared])], device=device), past_key_values=cache,
                  use_cache=True, logits_to_keep=1)
        TIMER.forwards += 1
        TIMER.tokens += shared
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    scored: list[list[Scored]] = [[] for _ in prompts]
    decoded: list[list[int]] | None = [[] for _ in prompts] if decode is not None else None
    batches = length_batches([len(p) - shared for p in prompts], budget)
    groups: list[list[list[int]]] = []
    for idx in batches:  # ascending widths: a group's widest batch is its last
        width = len(prompts[idx[-1]])
        rows = sum(len(b) for b in groups[-1]) if groups else 0
        if groups and (rows + len(idx)) * width <= CACHE_TOKENS:
            groups[-1].append(idx)
        else:
            groups.append([idx])
    for group in groups:
        g = _merge([_prompt_pass(model, tok, prompts, idx, shared, prefix_kv) for idx in group])
        # A continuation asked twice of one prompt (the neighborhood's reference is often o
        # itself) is scored once.
        unique = {(r, tuple(t)): None for r, i in enumerate(g.idx) for t in conts[i]}
        pairs = [(r, list(t)) for r, t in unique]
        if pairs:
            found = dict(zip(unique, _score_suffix(model, tok, g, pairs, logprobs)))
            for r, i in enumerate(g.idx):
                scored[i] = [found[(r, tuple(t))] for t in conts[i]]
        if decoded is not None and decode is not None:
            lengths = [decode(i, scored[i]) if callable(decode) else decode[i] for i in g.idx]
            for i, ids in zip(g.idx, _decode(model, g, lengths, eos or set())):
                decoded[i] = ids
    return scored, decoded
