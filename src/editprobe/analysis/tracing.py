"""Causal tracing (Meng et al., ROME §2): which hidden states carry a fact.

For every record the clean model knows, the subject's input embeddings are corrupted with
Gaussian noise (``samples`` noisy copies, one batch); then the clean hidden state of one
module kind at one (layer, token) is put back and the true object's first-token
probability is measured again. Indirect effect = p_restored - p_corrupted.

Kinds: ``block`` (a block's output, the residual stream) restores one layer; ``mlp`` and
``attn`` (the sublayer outputs) restore a window of ``layers_window`` layers around the
layer, clipped at the ends, because one sublayer alone barely moves the output.

Restorations are packed: every (kind, layer, position) job is ``samples`` rows of a
batched forward, and each module's hook restores only the rows whose job covers it. Three
exact savings (the results equal the straightforward computation up to float rounding;
``trace_record(..., reference=True)`` keeps that computation for tests):

* positions before the first subject token are never computed: the noise touches only the
  subject's embeddings, so in a causal LM every hidden state before the subject is the
  same in the clean and the corrupted run, restoring it changes nothing, and its indirect
  effect is exactly 0;
* layers below a restoration are not run: up to its earliest restored module (a block
  job's own block, the first layer of an mlp/attn window) a job computes exactly what the
  plain corrupted run computes. The corrupted run is done once per record, keeping every
  block's output and the keys/values of every layer; jobs are grouped by where they start
  and each group's forward starts there (``models.resume_forward``), with the block output
  restored in the emitted state for block jobs;
* positions before the restored one are not run either: a restoration at position t
  changes nothing at earlier positions, so those come from the corrupted run's KV cache
  and a job feeds only positions t.. (for caches that are not plain dynamic ones, e.g.
  sliding windows, every position is fed).

Only the last position's logits are computed.

Probabilities are computed in fp32 from the logits; the CLI also loads the model in fp32.
Prompts are traced as plain text (no chat template), as in ROME.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data.records import EditRecord
from ..models.adapters import ModelAdapter
from ..models.hooks import capture, edit_output
from ..models.tokens import (
    TokenizationError,
    char_span_of_subject,
    continuation_ids,
    subject_last_index,
    token_index_at_char,
)
from ..probes.exact import exact_match_ids
from ..probes.generation import query_ids
from .trace_restore import model_device, restored_reference, restored_replayed, target_probs
from .trace_restore import window_layers  # noqa: F401 - part of this module's interface
from .trace_types import Prepared, TraceError, TraceSettings

KINDS = ("block", "mlp", "attn")
BUCKETS = (
    "first subject token",
    "middle subject tokens",
    "last subject token",
    "first subsequent token",
    "further tokens",
    "last token",
)
LAST_SUBJECT = BUCKETS.index("last subject token")
MEMIT_WINDOW = 5
RECOMMENDATION_RULE = (
    "peak_layer: the layer whose MLP restoration has the largest average indirect effect at the "
    "last subject token; window: the 5 consecutive layers ending at the peak (shifted right when "
    "that would start before layer 0, all layers when the model has fewer than 5), since MEMIT "
    "spreads an edit over the MLPs that feed the decisive state"
)


@dataclass
class RecordTrace:
    prepared: Prepared
    p_clean: float
    p_corrupted: float
    effects: dict[str, np.ndarray]  # kind -> [positions, layers] indirect effects

    def buckets(self, kind: str) -> np.ndarray:
        return bucket_means(self.effects[kind], self.prepared.subject_first, self.prepared.subject_last)


@dataclass
class TraceResult:
    traces: list[RecordTrace]
    n_requested: int
    noise_std: float
    num_layers: int
    settings: TraceSettings
    skipped: list[str] = field(default_factory=list)  # why a record was left out

    def buckets_by_layer(self, kind: str) -> np.ndarray:
        """[6, layers]: per-record bucket means averaged over records; NaN where no record
        has a token in the bucket (e.g. no token after a subject that ends the prompt)."""
        stacked = np.stack([t.buckets(kind) for t in self.traces])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
            return np.nanmean(stacked, axis=0)

    @property
    def low(self) -> float:
        return float(np.mean([t.p_corrupted for t in self.traces]))

    @property
    def high(self) -> float:
        return float(np.mean([t.p_clean for t in self.traces]))

    def recommendation(self) -> dict:
        return recommend(self.buckets_by_layer("mlp"))


# --- tokens and buckets ------------------------------------------------------------------
def prepare_record(tok, record: EditRecord, index: int) -> Prepared:
    """Locate the subject's tokens through the offset mapping (the package's helpers) and
    the true object's first token as a continuation of the query."""
    if not record.target_true or not record.target_true.strip():
        raise TokenizationError(f"record {record.id}: no true object (target_true) to trace")
    query = record.query
    start, end = char_span_of_subject(record.template, record.subject)
    last = subject_last_index(tok, query, end)
    enc = tok(query, add_special_tokens=True, return_offsets_mapping=True, return_special_tokens_mask=True)
    first = token_index_at_char(enc["offset_mapping"], start, enc["special_tokens_mask"])
    ids = query_ids(tok, query)
    if not 0 <= first <= last < len(ids):
        raise TokenizationError(f"record {record.id}: subject tokens {first}..{last} outside the query's {len(ids)}")
    target = continuation_ids(tok, query, record.target_true)[0]
    return Prepared(index, record, ids, first, last, target)


def bucket_positions(first: int, last: int, length: int) -> list[list[int]]:
    """Token positions of each bucket, ROME's convention: a one-token subject is both the
    first and the last subject token; the first subsequent token may be the last token."""
    return [
        [first],
        list(range(first + 1, last)),
        [last],
        [last + 1] if last + 1 < length else [],
        list(range(last + 2, length - 1)),
        [length - 1],
    ]


def bucket_means(effects: np.ndarray, first: int, last: int) -> np.ndarray:
    """[positions, layers] -> [6, layers]; an empty bucket is a row of NaN."""
    out = np.full((len(BUCKETS), effects.shape[1]), np.nan, dtype=np.float64)
    for b, positions in enumerate(bucket_positions(first, last, effects.shape[0])):
        if positions:
            out[b] = effects[positions].mean(axis=0)
    return out


def recommend(mlp_buckets: np.ndarray, size: int = MEMIT_WINDOW) -> dict:
    curve = mlp_buckets[LAST_SUBJECT]
    if np.all(np.isnan(curve)):
        raise TraceError("no MLP effect at the last subject token to recommend layers from")
    num_layers = len(curve)
    peak = int(np.nanargmax(curve))
    size = min(size, num_layers)
    start = min(max(0, peak - size + 1), num_layers - size)
    return {"kind": "mlp", "peak_layer": peak, "window": list(range(start, start + size)), "rule": RECOMMENDATION_RULE}


# --- forwards (the restored runs: trace_restore.py) ------------------------------------------
def _noise_fn(noise: torch.Tensor, first: int, last: int) -> Callable[[torch.Tensor], torch.Tensor]:
    samples = noise.shape[0]

    def fn(h: torch.Tensor) -> torch.Tensor:
        # Rows come in groups of `samples`, so row r always gets noise sample r % samples.
        h = h.clone()
        h[:, first : last + 1] += noise.repeat(h.shape[0] // samples, 1, 1).to(h.dtype)
        return h

    return fn


def record_seed(seed: int, index: int) -> int:
    # Per record, so a record's noise does not depend on which other records are known.
    return (seed * 1_000_003 + index) % (2**63)


@torch.no_grad()
def subject_embedding_std(model: nn.Module, adapter: ModelAdapter, prepared: Sequence[Prepared]) -> float:
    """Std of the embedding module's outputs over every subject token of ``prepared``."""
    embed = adapter.module(model, "embed")
    device = model_device(model)
    rows = [
        embed(torch.tensor([p.ids], device=device))[0, p.subject_first : p.subject_last + 1].float()
        for p in prepared
    ]
    return float(torch.cat(rows).std().item())


@torch.no_grad()
def trace_record(
    model: nn.Module,
    adapter: ModelAdapter,
    prep: Prepared,
    noise_std: float,
    settings: TraceSettings,
    *,
    reference: bool = False,
    _skip_before_subject: bool = True,
) -> RecordTrace:
    """Indirect effects of one record. ``reference=True`` computes every job, positions
    before the subject included, with full forwards from the embeddings (slow; the
    straightforward computation the default one is tested against).
    ``_skip_before_subject=False`` (tests) makes the default computation run the positions
    before the subject too instead of writing their exact 0."""
    settings.check()
    device, S = model_device(model), settings.samples
    num_layers, length = adapter.n_layers(model), len(prep.ids)
    ids = torch.tensor([prep.ids], device=device)
    paths = {(k, layer): adapter.path(k, layer) for k in KINDS for layer in range(num_layers)}
    with capture(model, list(paths.values())) as store:
        p_clean = float(target_probs(model, ids, prep.target_id)[0])
    clean = {key: store[path][0] for key, path in paths.items()}  # [positions, d]

    gen = torch.Generator().manual_seed(record_seed(settings.seed, prep.index))
    n_subject = prep.subject_last - prep.subject_first + 1
    # Drawn on the CPU so the same seed gives the same noise on every device.
    noise = torch.randn(S, n_subject, adapter.d_model(model), generator=gen) * (settings.noise * noise_std)
    noise = noise.to(device)
    embed = adapter.module(model, "embed")
    corrupt = _noise_fn(noise, prep.subject_first, prep.subject_last)

    with edit_output(embed, corrupt):
        p_corrupted = float(target_probs(model, ids.repeat(S, 1), prep.target_id).mean())

    effects = {k: np.zeros((length, num_layers), dtype=np.float32) for k in KINDS}
    if reference:
        jobs = [(k, layer, t) for k in KINDS for layer in range(num_layers) for t in range(length)]
        restored = restored_reference(model, adapter, prep, ids, corrupt, clean, jobs, settings)
    else:
        # Positions before the first subject token are left at their exact 0 (module docstring).
        first = prep.subject_first if _skip_before_subject else 0
        jobs = [(k, layer, t) for k in KINDS for layer in range(num_layers) for t in range(first, length)]
        restored = restored_replayed(model, adapter, prep, ids, corrupt, clean, jobs, settings)
    for (k, layer, t), p in zip(jobs, restored):
        effects[k][t, layer] = p - p_corrupted
    return RecordTrace(prep, p_clean, p_corrupted, effects)


@torch.no_grad()
def run_trace(
    model: nn.Module,
    tok,
    adapter: ModelAdapter,
    records: Sequence[EditRecord],
    settings: TraceSettings = TraceSettings(),
    on_known: Callable[[int], None] | None = None,
    on_record: Callable[[RecordTrace], None] | None = None,
) -> TraceResult:
    """Trace every record the model knows. ``on_known(n)`` is called once the known
    records are counted, ``on_record`` after each traced record (progress bars)."""
    settings.check()
    if not records:
        raise TraceError("no records to trace")
    prepared, skipped = [], []
    for i, record in enumerate(records):
        try:
            prepared.append(prepare_record(tok, record, i))
        except TokenizationError as exc:
            skipped.append(str(exc))
    if not prepared:
        raise TraceError(f"none of the {len(records)} records could be tokenized for tracing: {skipped[0]}")
    noise_std = subject_embedding_std(model, adapter, prepared)
    # Known = the greedy next token is the true object's first token.
    known_flags = exact_match_ids(model, tok, [(p.ids, [p.target_id]) for p in prepared])
    known = [p for p, ok in zip(prepared, known_flags) if ok]
    skipped += [f"record {p.record.id}: not known (greedy next token is not the true object's)"
                for p, ok in zip(prepared, known_flags) if not ok]
    if not known:
        raise TraceError(
            f"the model knows none of the {len(records)} records (its greedy next token is never the "
            "true object's first token); nothing to trace"
        )
    if on_known is not None:
        on_known(len(known))
    traces = []
    for prep in known:
        traces.append(trace_record(model, adapter, prep, noise_std, settings))
        if on_record is not None:
            on_record(traces[-1])
    return TraceResult(traces, len(records), noise_std, adapter.n_layers(model), settings, skipped)
