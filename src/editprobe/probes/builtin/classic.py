"""The classic edit metrics — efficacy, paraphrase (generalization), neighborhood
(specificity / locality) — each computed the way the reference evaluation of its dataset
computes it, and labelled with that protocol:

- CounterFact / MCF (and MQuAKE's single-hop rewrites), as in the ROME/MEMIT/AlphaEdit
  evaluation: **teacher-forced probability comparison**. For a prompt, the mean negative
  log-probability per token of " o*" and of " o" as its continuation. Efficacy and
  paraphrase succeed when o* is the likelier (`prob`), with magnitude p(o*) − p(o) where
  p = exp(−mean NLL) (`magnitude`); neighborhood prompts (other subjects whose answer is o)
  succeed when o stays the likelier, magnitude p(o) − p(o*). Beside them the
  **teacher-forced exact match** (`EM`): o* for efficacy and paraphrase; for the
  neighborhood, the unedited model's own greedy continuation (``probes/classic.py``).
- zsRE, KnowEdit (zsRE test, WCF) and the EasyEdit flat format, as in the MEMIT/AlphaEdit
  zsRE evaluation and EasyEdit: **teacher-forced token accuracy** (`tokens`): the share of
  target tokens that are the argmax after the prompt and the target's earlier tokens.
  Neighborhood: zsRE's NQ answer after the NQ question (MEMIT/AlphaEdit); KnowEdit's
  locality: the share of tokens of the locality answer at which the edited model's argmax
  equals the unedited model's (EasyEdit).

Each dataset format declares its protocol and whether its neighbourhood is EasyEdit's
locality (``DatasetFormat.protocol``, ``.has_locality``; data/formats/). Every value is
averaged over a record's prompts (or tokens) first, then over records, as the references
do; the "No edit" row is the same metric on the unedited model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

from ...forms import QueryForm
from ..base import (
    TEACHER_FORCED_EM, TEACHER_FORCED_PROB, TEACHER_FORCED_TOKENS, Metric, Probe, ProbeContext, ProbeOutcome, Rows,
    register_probe,
)
from ..classic import DEFAULT_REFERENCE_TOKENS
from ..generation import query_ids
from ...data.formats import ScoringProtocol, formats_of
from ...jsontext import number
from ...models.tokens import continuation_ids
from ..scoring import score_and_decode, teacher_forced

def protocol_of(records: Sequence) -> ScoringProtocol:
    """The reference protocol its dataset format declares for the records (token accuracy
    wins a mix); from the records themselves when no format of theirs declares one."""
    declared = {fmt.protocol for fmt in formats_of(records)}
    if "tokens" in declared:
        return "tokens"
    if "prob" in declared:
        return "prob"
    return "prob" if all(r.target_true and not r.is_question for r in records) else "tokens"


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


class ClassicProbe(Probe):
    """Shared by efficacy, paraphrase and neighborhood: which prompts, which targets."""

    setting: ClassVar[str]
    expect_new: ClassVar[bool] = True  # o* should win (efficacy, paraphrase) or o (neighborhood)

    def prompts(self, record) -> list[tuple[str, str | None]]:
        """(prompt, the dataset's answer for token accuracy, or None: o*) of one record."""
        raise NotImplementedError

    def applies_to(self, ctx: ProbeContext) -> bool:
        return any(self.prompts(r) for r in ctx.records)

    # --- measuring ---------------------------------------------------------------------------
    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        protocol = protocol_of(ctx.records)
        rows = [(r, p, a) for r in ctx.records for p, a in self.prompts(r)]
        if protocol == "prob":
            reference = None if stage == "baseline" else self._reference(ctx, rows, stage, baseline, None, None)
            lengths = self._reference_lengths(ctx, rows) if stage == "baseline" else None
            state, scores, decoded = self._prob(ctx, rows, reference, lengths)
            if stage == "baseline":
                reference = self._reference(ctx, rows, stage, baseline, scores, decoded)
            if reference is not None:
                state["reference"] = reference
                if stage == "baseline":  # the unedited model against its own greedy continuation
                    state["em"] = [True] * len(reference)
        else:
            state = self._tokens(ctx, rows, stage)
        return {"protocol": protocol, "record_ids": [r.id for r, _, _ in rows], "prompts": [p for _, p, _ in rows],
                **state}

    def _prob(self, ctx: ProbeContext, rows, reference: list[list[int]] | None, lengths: list[int] | None = None
              ) -> tuple[dict[str, Any], list, list[list[int]] | None]:
        """Both targets (and the reference, when exact match is against it) as continuations
        of each prompt, the prompt run once; with ``lengths``, the greedy continuation of
        that many tokens too, decoded from the same pass where the targets do not show it."""
        tok = ctx.tokenizer
        asked = ctx.transform.completions([p for _, p, _ in rows])
        continuations = [[continuation_ids(tok, p, r.target_new), continuation_ids(tok, p, r.target_true)]
                         + ([reference[i]] if reference is not None else []) for i, ((r, _, _), p) in
                         enumerate(zip(rows, asked))]
        decode = None
        if lengths is not None:
            decode = lambda i, scored: 0 if _greedy_from(lengths[i], scored) else lengths[i]  # noqa: E731
        scores, decoded = score_and_decode(ctx.model, tok, [query_ids(tok, p) for p in asked], continuations, decode,
                                           stop_at_eos=False)
        # Exact match of o* is read off the o* continuation (its argmax at every token).
        em = [s[2 if reference is not None else 0].exact for s in scores]
        state = {"nll_new": [s[0].mean_nll for s in scores], "nll_old": [s[1].mean_nll for s in scores], "em": em}
        return state, scores, decoded  # the baseline reads greedy references off them

    def _reference_lengths(self, ctx: ProbeContext, rows) -> list[int] | None:
        """Tokens of greedy continuation the baseline keeps per prompt (None: none)."""
        return None

    def _reference(self, ctx: ProbeContext, rows, stage, baseline, scores, decoded) -> list[list[int]] | None:
        """What exact match compares with when it is not o* (the neighborhood's reference)."""
        return None

    def _tokens(self, ctx: ProbeContext, rows, stage) -> dict[str, Any]:
        targets = [(p, a if a is not None else r.target_new) for r, p, a in rows]
        scores = teacher_forced(ctx.model, ctx.tokenizer, [(ctx.transform.completion(p), t) for p, t in targets],
                                logprobs=False)
        return {"hits": [s.token_hits for s in scores], "expected": [t for _, t in targets],
                "predicted": [list(s.predicted) for s in scores]}

    # --- aggregating -------------------------------------------------------------------------
    def _per_record(self, record_ids: list[str], values: list[float]) -> dict[str, float]:
        """Each record's mean over its prompts, in the order the records first appear."""
        by_record: dict[str, list[float]] = {}
        for rid, v in zip(record_ids, values):
            by_record.setdefault(rid, []).append(v)
        return {rid: _mean(v) for rid, v in by_record.items()}

    def _token_values(self, state: dict[str, Any], baseline: dict[str, Any] | None) -> tuple[list[str], list[list]]:
        return state["record_ids"], state["hits"]

    def metrics(self, state: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Metric]:
        ids = state["record_ids"]
        if state["protocol"] == "tokens":
            rids, hits = self._token_values(state, baseline)
            flat: dict[str, list[bool]] = {}
            for rid, h in zip(rids, hits):
                flat.setdefault(rid, []).extend(h)
            values = {rid: _mean(v) for rid, v in flat.items() if v}
            return {"tokens": Metric.of_records(values, f"{TEACHER_FORCED_TOKENS}: {self.token_label}")}
        sign = 1 if self.expect_new else -1
        pairs = list(zip(map(number, state["nll_new"]), map(number, state["nll_old"])))
        success = [float(sign * (o - n) > 0) for n, o in pairs]
        magnitude = [sign * (_p(n) - _p(o)) for n, o in pairs]
        winner, loser = ("o*", "o") if self.expect_new else ("o", "o*")
        out = {
            "prob": Metric.of_records(self._per_record(ids, success),
                                f"{TEACHER_FORCED_PROB}: % of {self.setting} prompts where mean log p({winner}) > "
                                f"mean log p({loser}) (ROME/MEMIT)"),
            "magnitude": Metric.of_records(self._per_record(ids, magnitude),
                                     f"{TEACHER_FORCED_PROB}: mean p({winner}) − p({loser}), p = exp(−mean token NLL), "
                                     "in points (ROME/MEMIT)", unit="points"),
        }
        em = self._em_values(state, baseline)
        if em is not None:
            out["EM"] = Metric.of_records(self._per_record(ids, [float(x) for x in em]),
                                    f"{TEACHER_FORCED_EM}: {self.em_label}")
        return out

    def _em_values(self, state: dict[str, Any], baseline: dict[str, Any] | None) -> list[bool] | None:
        return state.get("em")

    token_label: ClassVar[str] = "o* after the prompt"
    em_label: ClassVar[str] = "o* after the prompt"

    def _rows(self, state: dict[str, Any], edited_with: str, baseline: dict[str, Any] | None) -> Rows:
        rows = []
        for i, (rid, prompt) in enumerate(zip(state["record_ids"], state["prompts"])):
            row = {"edited_with": edited_with, "record_id": rid, "setting": self.setting, "probe": self.name,
                   "query": prompt}
            if state["protocol"] == "tokens":
                hits = self._token_values(state, baseline)[1][i]
                row.update(expected=state["expected"][i], match=all(hits), token_accuracy=_mean(hits) if hits else None)
            else:
                n, o = number(state["nll_new"][i]), number(state["nll_old"][i])
                row.update(expected="o*" if self.expect_new else "o", match=(o - n > 0) == self.expect_new,
                           nll_new=n, nll_old=o)
                em = self._em_values(state, baseline)
                if em is not None:
                    row["exact_match"] = em[i]
            rows.append(row)
        return rows

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        return (self.outcome(self.metrics(baseline, baseline), protocol=baseline["protocol"]),
                self._rows(baseline, "none", baseline))

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after, base = states["positive"], states.get("baseline")
        return (self.outcome(self.metrics(after, base), protocol=after["protocol"]),
                self._rows(after, "positive", base))


def _greedy_from(n: int, candidates) -> list[int] | None:
    """The first ``n`` greedy tokens, if a teacher-forced pass shows them: its argmax at step
    j is the greedy token as long as the target agreed with the argmax before j."""
    for scores in candidates:
        greedy: list[int] = []
        for j, token in enumerate(scores.predicted):
            greedy.append(token)
            if len(greedy) == n:
                return greedy
            if token != scores.target[j]:
                break
    return None


def _p(nll: float) -> float:
    return math.exp(-nll)


@register_probe
class EfficacyProbe(ClassicProbe):
    name = "efficacy"
    setting = "efficacy"
    description = "the edit prompt itself: o* preferred / produced"
    metric_forms = {k: frozenset({QueryForm.POSITIVE}) for k in ("prob", "magnitude", "EM", "tokens")}

    def prompts(self, record):
        return [(record.query, None)]


@register_probe
class ParaphraseProbe(ClassicProbe):
    name = "paraphrase"
    setting = "paraphrase"
    description = "paraphrases of the edit prompt (generalization)"
    metric_forms = {k: frozenset({QueryForm.PARAPHRASE}) for k in ("prob", "magnitude", "EM", "tokens")}
    em_label = "o* after each paraphrase prompt (probes/classic.py)"
    token_label = "o* after each paraphrase (rephrase) prompt"

    def prompts(self, record):
        return [(p, None) for p in record.paraphrase_prompts]


@register_probe
class NeighborhoodProbe(ClassicProbe):
    name = "neighborhood"
    setting = "neighborhood"
    expect_new = False
    description = "prompts about other subjects the edit must not change (specificity / locality)"
    em_label = "the unedited model's own greedy continuation after each neighborhood prompt (probes/classic.py)"
    token_label = ("zsRE: the dataset's answer after the NQ prompt (MEMIT/AlphaEdit); KnowEdit: the edited model's "
                   "argmax equals the unedited model's at each token of the locality answer (EasyEdit)")

    def prompts(self, record):
        return [(pa.prompt, pa.answers[0] if pa.answers else None) for pa in record.neighborhood]

    def _reference_lengths(self, ctx: ProbeContext, rows) -> list[int]:
        tok = ctx.tokenizer
        return [len(continuation_ids(tok, p, a)) if a else DEFAULT_REFERENCE_TOKENS for _, p, a in rows]

    def _reference(self, ctx: ProbeContext, rows, stage, baseline, scores, decoded) -> list[list[int]] | None:
        """The unedited model's greedy continuations (taken at the baseline, kept in its
        state), as long (in tokens) as the dataset's answer; EM after an edit: the model
        still produces them. Most are read off the baseline's o*/o passes (greedy decoding
        follows a teacher-forced target while its argmax agrees with it); the rest were
        decoded from the same prompt pass."""
        if stage != "baseline":
            return baseline["reference"]
        lengths = self._reference_lengths(ctx, rows)
        return [_greedy_from(n, row_scores) or ids for n, row_scores, ids in zip(lengths, scores, decoded)]

    def _tokens(self, ctx: ProbeContext, rows, stage) -> dict[str, Any]:
        # EasyEdit's locality (KnowEdit, the flat format) compares the argmax at each token
        # of the locality answer with the unedited model's; zsRE scores the NQ answer.
        locality = any(fmt.has_locality for fmt in formats_of(ctx.records))
        return {**super()._tokens(ctx, rows, stage), "locality": locality}

    def _token_values(self, state, baseline):
        if not state.get("locality"):
            return state["record_ids"], state["hits"]
        reference = (baseline or state)["predicted"]
        return state["record_ids"], [[a == b for a, b in zip(x, y)] for x, y in zip(state["predicted"], reference)]
