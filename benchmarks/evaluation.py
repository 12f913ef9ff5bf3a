"""The evaluation stage: the teacher-forced probes as a run executes them after an edit
(negation PP/PN queries, fact-check answers, efficacy/paraphrase/neighborhood
probabilities), measured on the unedited model, against the floor measured beside it: one
plain batched forward over exactly the prompts those probes ask (each distinct prompt
once, sorted by length and padded once per batch, vocabulary logits at one position, no
targets, no decoding). The probes do more than that floor (they score targets after the
prompts) and share work it does not (a chat template's common prefix, one prompt pass for
several targets).

The stage's greedy decoding (the negation samples' text, the fact-check answers' few
tokens) is timed apart (``batched.TIMER``) and reported as its own row, against one
forward over the same number of generated tokens: decoding is sequential by nature, so
that row has no goal; it shows what stepping costs."""

from __future__ import annotations

import time

import torch

from editprobe.data import load_records
from editprobe.models.tokens import has_chat_template, make_batch
from editprobe.probes import build_negation_plan
from editprobe.probes.base import ProbeContext, resolve_probe
from editprobe.probes.batched import TIMER, TOKEN_BUDGET, length_batches
from editprobe.probes.factcheck import fact_check_prompt, make_statement
from editprobe.probes.generation import prompt_ids, query_ids
from editprobe.probes.negation import RUN_SETTINGS

from .table import Ratio

PROBES = ("negation", "factcheck", "efficacy", "paraphrase", "neighborhood")
STAGE = "positive"  # the stage every method repeats; measured here on the unedited model
GOAL = 1.2


def _context(loaded, n: int):
    from editprobe.runs.config import RunConfig

    records = load_records("counterfact-sample", limit=n).records
    plan = build_negation_plan(records)
    return ProbeContext(dataset="counterfact-sample", records=[i.record for i in plan.items], plan=plan,
                        model=loaded.model, tokenizer=loaded.tokenizer, config=RunConfig(model=loaded.name))


def prompt_sequences(ctx: ProbeContext, probes) -> list[list[int]]:
    """The token ids of every prompt the stage's probes ask: the negation queries (positive
    and negated template), the fact-check chat prompts (new and old object), the efficacy,
    paraphrase and neighborhood prompts; each distinct prompt once, targets not included."""
    tok = ctx.tokenizer
    seqs: list[list[int]] = []
    for p in probes:
        if p.name == "negation":
            seqs += [query_ids(tok, item.query(kind)) for _, kind in RUN_SETTINGS[STAGE] for item in ctx.plan.items]
        elif p.name == "factcheck":
            cfg, chat = ctx.config.factcheck, has_chat_template(tok)
            seqs += [prompt_ids(tok, fact_check_prompt(tok, make_statement(r, t, cfg), cfg), rendered_chat=chat)
                     for r in ctx.records for t in (r.target_new, r.target_true) if t and t.strip()]
        elif p.name in ("efficacy", "paraphrase", "neighborhood"):
            seqs += [query_ids(tok, prompt) for r in ctx.records for prompt, _ in p.prompts(r)]
    return [list(s) for s in {tuple(s): None for s in seqs}]


@torch.no_grad()
def floor_forward(model, tok, seqs: list[list[int]], budget: int = TOKEN_BUDGET) -> tuple[float, int]:
    """(seconds, padded tokens) of one plain forward over ``seqs``, batched by length."""
    device = next(model.parameters()).device
    start, padded = time.perf_counter(), 0
    for idx in length_batches([len(s) for s in seqs], budget):
        b = make_batch(tok, [seqs[i] for i in idx], "right").to(device)
        model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False, logits_to_keep=1)
        padded += b.input_ids.numel()
    return time.perf_counter() - start, padded


def _stage(ctx, probes, baseline) -> tuple[float, float, dict[str, float], int, int]:
    """(total s, decoding s, s per probe, decoded tokens, tokens fed) of one stage."""
    TIMER.reset()
    per: dict[str, float] = {}
    start = time.perf_counter()
    for p in probes:
        t = time.perf_counter()
        p.measure(ctx, STAGE, baseline.get(p.name))
        per[p.name] = time.perf_counter() - t
    total = time.perf_counter() - start
    return total, TIMER.decode_s, per, TIMER.decoded, TIMER.tokens


def run(loaded, n: int = 40, repeats: int = 2) -> list[Ratio]:
    """Ratios of the evaluation stage on ``n`` CounterFact records (``loaded``: a
    ``load_model`` result); each side measured ``repeats`` times, interleaved, best kept."""
    ctx = _context(loaded, n)
    probes = [p for p in (resolve_probe(name) for name in PROBES) if p.applies_to(ctx)]
    baseline = {p.name: p.measure(ctx, "baseline", None) for p in probes if "baseline" in p.stages}
    seqs = prompt_sequences(ctx, probes)
    floor_s = stage_s = decode_s = float("inf")
    for _ in range(repeats):
        f, padded = floor_forward(ctx.model, ctx.tokenizer, seqs)
        floor_s = min(floor_s, f)
        total, dec, per, n_decoded, n_fed = _stage(ctx, probes, baseline)
        if total - dec < stage_s:
            stage_s, decode_s, best_per, decoded, fed = total - dec, dec, per, n_decoded, n_fed
    real = sum(len(s) for s in seqs)
    gen_floor = _generated_floor(ctx, decoded)
    per_probe = ", ".join(f"{k} {v:.2f}" for k, v in best_per.items())
    return [
        Ratio(stage="evaluation (teacher-forced)", versus="one batched forward over the same prompts",
              measured_s=stage_s, floor_s=floor_s, goal=GOAL,
              detail=f"{len(ctx.records)} records, {len(seqs)} prompts, {real} tokens ({padded} padded) in the "
                     f"floor, {fed} fed by the probes; s per probe (decoding included): {per_probe}"),
        Ratio(stage="evaluation (free generation)", versus="one forward over the generated tokens",
              measured_s=decode_s, floor_s=gen_floor, goal=None,
              detail=f"{decoded} tokens decoded greedily with a KV cache (negation sample text, fact-check answers)"),
    ]


@torch.no_grad()
def _generated_floor(ctx, n_tokens: int, width: int = 8) -> float:
    """One forward over as many tokens as were decoded (rows of ``width``)."""
    rows = max(1, -(-n_tokens // width))
    ids = torch.full((rows, width), 1, dtype=torch.long, device=next(ctx.model.parameters()).device)
    start = time.perf_counter()
    ctx.model(input_ids=ids, use_cache=False, logits_to_keep=1)
    return time.perf_counter() - start
