"""Beyond the edit prompt: KnowEdit's portability and MQuAKE's multi-hop questions, both as
**teacher-forced token accuracy** (EasyEdit's portability; the MQuAKE evaluation of the
AlphaEdit code the paper uses): the share of the answer's tokens that are the argmax after
the question and the answer's earlier tokens. Portability: each question's token accuracy,
their mean over a record's questions, then over records, as EasyEdit summarises it (beside
it, labelled, the tokens of all a record's questions pooled); multi-hop: pooled over all
tokens of a case's questions, then over cases (AlphaEdit's MQuAKE evaluation)."""

from __future__ import annotations

from typing import Any

from ..base import TEACHER_FORCED_TOKENS, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..scoring import teacher_forced


def _questions(ctx: ProbeContext, multi_hop: bool) -> list[tuple[str, str, str]]:
    """(group id, question, answer): a record's portability prompts, or each MQuAKE case's
    multi-hop questions once (every record of a case carries the same ones)."""
    rows, seen = [], set()
    for r in ctx.records:
        for pa in r.portability:
            if (pa.kind == "multi_hop") != multi_hop or not pa.answers:
                continue
            group = (r.case_id or r.id) if multi_hop else r.id
            if multi_hop and (group, pa.prompt) in seen:
                continue
            seen.add((group, pa.prompt))
            rows.append((group, pa.prompt, pa.answers[0]))
    return rows


class _TokenAccuracyProbe(Probe):
    multi_hop = False
    label = ""
    pooled_label = ""  # the label of the tokens-pooled mean (the multi-hop probe's only metric)

    def applies_to(self, ctx: ProbeContext) -> bool:
        return bool(_questions(ctx, self.multi_hop))

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        rows = _questions(ctx, self.multi_hop)
        scores = teacher_forced(ctx.model, ctx.tokenizer, [(ctx.transform.completion(q), a) for _, q, a in rows],
                                logprobs=False)
        return {"groups": [g for g, _, _ in rows], "questions": [q for _, q, _ in rows],
                "answers": [a for _, _, a in rows], "hits": [s.token_hits for s in scores]}

    def _result(self, state: dict[str, Any], edited_with: str) -> tuple[ProbeOutcome, Rows]:
        pooled: dict[str, list[bool]] = {}  # a group's tokens of all its questions together
        per_question: dict[str, list[float]] = {}  # a group's questions, each its own token accuracy
        for g, hits in zip(state["groups"], state["hits"]):
            pooled.setdefault(g, []).extend(hits)
            if hits:
                per_question.setdefault(g, []).append(sum(hits) / len(hits))
        rows = [{"edited_with": edited_with, "record_id": g, "setting": self.name, "probe": self.name, "query": q,
                 "expected": a, "match": all(h), "token_accuracy": sum(h) / len(h) if h else None}
                for g, q, a, h in zip(state["groups"], state["questions"], state["answers"], state["hits"])]
        pooled_mean = Metric.of_records({g: sum(v) / len(v) for g, v in pooled.items() if v},
                                  f"{TEACHER_FORCED_TOKENS}: {self.pooled_label}")
        if self.multi_hop:
            return self.outcome({"tokens": pooled_mean}), rows
        by_question = Metric.of_records({g: sum(v) / len(v) for g, v in per_question.items()},
                                  f"{TEACHER_FORCED_TOKENS}: {self.label}")
        return self.outcome({"tokens": by_question, "tokens_pooled": pooled_mean}), rows

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        return self._result(baseline, "none")

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        return self._result(states["positive"], "positive")


@register_probe
class PortabilityProbe(_TokenAccuracyProbe):
    name = "portability"
    description = "questions one reasoning step from the edit (KnowEdit, zsRE with portability)"
    # EasyEdit's summary: a token accuracy per question, their mean per record, then over records.
    label = "each portability question's token accuracy, mean over a record's questions, then over records (EasyEdit)"
    pooled_label = "the tokens of all a record's portability questions together, then mean over records"


@register_probe
class MultiHopProbe(_TokenAccuracyProbe):
    name = "multihop"
    multi_hop = True
    description = "MQuAKE: the multi-hop questions of each edited case, answered with the new answer"
    pooled_label = ("the case's new answer after each of its multi-hop questions, mean over the tokens of all its "
                    "questions, then over cases (AlphaEdit's MQuAKE evaluation)")
