"""General-ability retention: perplexity on held-out text before and after editing.

The held-out text is the built-in ``wikitext-heldout`` corpus: the last paragraphs of the
WikiText-2 sample, which the built-in covariance corpus (``wikitext-sample``) leaves out,
so no edit's C0 has seen them. Perplexity = exp(mean token NLL) over the first ``DOCS``
documents, each cut at ``MAX_TOKENS`` tokens (token-weighted, BOS not scored). A corpus-level
figure: the stage stores the pooled NLL only, so it has no interval (docs/statistics.md)."""

from __future__ import annotations

import math
from typing import Any

import torch

from ...data.corpus import load_corpus
from ...jsontext import number
from ...models.tokens import encode, make_batch
from ..batched import length_batches
from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe

CORPUS = "wikitext-heldout"
DOCS = 24
MAX_TOKENS = 128
BATCH = 8
PPL_BUDGET = 1024  # padded tokens per forward: every position's logits are kept
LABEL = (f"exp(mean token NLL) of the unedited/edited model on {DOCS} held-out WikiText-2 paragraphs (the "
         f"'{CORPUS}' corpus, disjoint from the C0 corpus), each cut at {MAX_TOKENS} tokens; lower is better; corpus-level: no interval")


@torch.no_grad()
def corpus_nll(model, tok, texts: list[str], max_tokens: int = MAX_TOKENS, batch_size: int = BATCH) -> tuple[float, int]:
    """(summed NLL, token count) of ``texts`` under ``model``: every token after the first.
    Texts of similar length share a batch (cut by a token budget, ``batch_size`` rows at
    least), and log p is taken as logit − logsumexp, without a second vocabulary-sized tensor."""
    device = next(model.parameters()).device
    seqs = [ids[:max_tokens] for ids in (encode(tok, t) for t in texts) if len(ids) > 1]
    total, count = 0.0, 0
    budget = max(PPL_BUDGET, batch_size * max_tokens)
    for idx in length_batches([len(s) for s in seqs], budget):
        b = make_batch(tok, [seqs[i] for i in idx], "right").to(device)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits[:, :-1].float()
        logp = logits.gather(2, b.input_ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        mask = b.attention_mask[:, 1:].bool()
        total -= float(logp[mask].sum())
        count += int(mask.sum())
    return total, count


def _exp(x: float) -> float:
    """exp, infinite past a float's range (a broken model's NLL); the JSON then holds null."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


@register_probe
class PerplexityProbe(Probe):
    name = "perplexity"
    description = "perplexity on held-out text, before and after editing (general ability)"

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        texts = list(load_corpus(CORPUS).texts(DOCS))
        nll, count = corpus_nll(ctx.model, ctx.tokenizer, texts)
        return {"nll": nll, "tokens": count}

    def _metric(self, state: dict[str, Any]) -> Metric:
        value = _exp(number(state["nll"]) / state["tokens"]) if state["tokens"] else None
        return Metric(value=None if value is None else round(value, 2), n=state["tokens"], label=LABEL, unit="ppl",
                      higher_is_better=False)

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        return self.outcome({"ppl": self._metric(baseline)}), []

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        before, after = self._metric(states["baseline"]), self._metric(states["positive"])
        change = None
        if before.value and after.value is not None:
            nll_after, nll_before = number(states["positive"]["nll"]), number(states["baseline"]["nll"])
            change = round(100.0 * (_exp((nll_after - nll_before) / states["baseline"]["tokens"]) - 1), 1)
        return self.outcome({"ppl": after, "change": Metric(value=change, label="relative change of the perplexity "
                                                          "after editing, in %", unit="%", higher_is_better=False)}), []
