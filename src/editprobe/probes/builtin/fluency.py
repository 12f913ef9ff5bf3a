"""Generation fluency (opt-in: it generates): the weighted bi- and tri-gram entropy of text
the model writes after each record's generation prompts, as the ROME/MEMIT evaluation
measures it — **free generation**, top-5 sampling (seeded), ``MAX_NEW_TOKENS`` new tokens,
entropy in bits of each text's n-gram distribution, weighted 2/3 (bigrams) and 4/3
(trigrams) and averaged, then averaged over a record's texts and over records; reported ×100
as the references report it (GPT-J ≈ 620 in MEMIT's tables).

Deviations, named: words are split by a regular expression (``\\w+`` or one punctuation
mark) instead of NLTK's word tokenizer; the references generate up to 100 tokens including
the prompt, here ``MAX_NEW_TOKENS`` new ones. Records without generation prompts
(CounterFact's ``generation_prompts``) use their edit prompt.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

import torch

from ..base import FREE_GENERATION, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..generation import decode_text, greedy_decode, query_ids

MAX_NEW_TOKENS = 64
TOP_K = 5
SEED = 0
WEIGHTS = {2: 2 / 3, 3: 4 / 3}
_WORD = re.compile(r"\w+|[^\w\s]")
LABEL = (f"{FREE_GENERATION}: top-{TOP_K} sampling (seed {SEED}), {MAX_NEW_TOKENS} new tokens after each generation "
         "prompt; weighted bi-/tri-gram entropy in bits ×100 (ROME/MEMIT fluency)")


def ngram_entropy(text: str) -> float:
    """The weighted mean of the bigram and trigram entropies (bits) of one text."""
    words = _WORD.findall(text)
    values = []
    for n, weight in WEIGHTS.items():
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        entropy = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        values.append(weight * entropy)
    return sum(values) / len(values)


def _prompts(record) -> list[str]:
    return list(record.extra.get("generation_prompts") or [record.query])


@register_probe
class FluencyProbe(Probe):
    name = "fluency"
    default = False
    description = "n-gram entropy of generated text (opt-in: it generates)"

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        rows = [(r.id, p) for r in ctx.records for p in _prompts(r)]
        torch.manual_seed(SEED)
        ids = greedy_decode(ctx.model, ctx.tokenizer, [query_ids(ctx.tokenizer, ctx.transform.completion(p))
                                                       for _, p in rows],
                            MAX_NEW_TOKENS, top_k=TOP_K)
        texts = [p + decode_text(ctx.tokenizer, i) for (_, p), i in zip(rows, ids)]
        return {"record_ids": [r for r, _ in rows], "texts": texts}

    def _result(self, state: dict[str, Any], edited_with: str) -> tuple[ProbeOutcome, Rows]:
        by_record: dict[str, list[float]] = {}
        for rid, text in zip(state["record_ids"], state["texts"]):
            by_record.setdefault(rid, []).append(ngram_entropy(text))
        values = {rid: sum(v) / len(v) for rid, v in by_record.items()}
        metric = Metric.of_records(values, LABEL, unit="bits×100", higher_is_better=True)
        rows = [{"edited_with": edited_with, "record_id": rid, "setting": "fluency", "probe": self.name,
                 "query": "", "expected": "", "generated": text, "match": None}
                for rid, text in zip(state["record_ids"], state["texts"])]
        return self.outcome({"entropy": metric}), rows

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        return self._result(baseline, "none")

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        return self._result(states["positive"], "positive")
