"""Beyond the edit prompt: KnowEdit's portability and MQuAKE's multi-hop questions, both as
**teacher-forced token accuracy** (EasyEdit's portability; the MQuAKE evaluation of the
AlphaEdit code the paper uses): the share of the answer's tokens that are the argmax after
the question and the answer's earlier tokens, averaged over all tokens of a record's (a
case's) questions, then over records (cases)."""

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

    def applies_to(self, ctx: ProbeContext) -> bool:
        return bool(_questions(ctx, self.multi_hop))

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        rows = _questions(ctx, self.multi_hop)
        scores = teacher_forced(ctx.model, ctx.tokenizer, [(ctx.transform.completion(q), a) for _, q, a in rows],
                                logprobs=False)
        return {"groups": [g for g, _, _ in rows], "questions": [q for _, q, _ in rows],
                "answers": [a for _, _, a in rows], "hits": [s.token_hits for s in scores]}

    def _result(self, state: dict[str, Any], edited_with: str) -> tuple[ProbeOutcome, Rows]:
        by_group: dict[str, list[bool]] = {}
        for g, hits in zip(state["groups"], state["hits"]):
            by_group.setdefault(g, []).extend(hits)
        values = [sum(v) / len(v) for v in by_group.values() if v]
        rows = [{"edited_with": edited_with, "record_id": g, "setting": self.name, "probe": self.name, "query": q,
                 "expected": a, "match": all(h), "token_accuracy": sum(h) / len(h) if h else None}
                for g, q, a, h in zip(state["groups"], state["questions"], state["answers"], state["hits"])]
        return self.outcome({"tokens": Metric.mean(values, f"{TEACHER_FORCED_TOKENS}: {self.label}")}), rows

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        return self._result(baseline, "none")

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        return self._result(states["positive"], "positive")


@register_probe
class PortabilityProbe(_TokenAccuracyProbe):
    name = "portability"
    description = "questions one reasoning step from the edit (KnowEdit, zsRE with portability)"
    label = "each portability question's answer, mean over a record's tokens, then over records (EasyEdit)"


@register_probe
class MultiHopProbe(_TokenAccuracyProbe):
    name = "multihop"
    multi_hop = True
    description = "MQuAKE: the multi-hop questions of each edited case, answered with the new answer"
    label = ("the case's new answer after each of its multi-hop questions, mean over the tokens of all its "
             "questions, then over cases (AlphaEdit's MQuAKE evaluation)")
