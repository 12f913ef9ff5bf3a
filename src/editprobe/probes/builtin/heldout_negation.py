"""Held-out negation (docs/battery.md#held-out-negation): o* after negated forms of the edited
fact that no editor trains on — the record's paraphrases negated by the negation rules
(``NPara``), and a second negation form of the edit prompt, "It is not true that ..." (``NAlt``).

``negation: defend`` and FT/LTE's negation augmentation train on the rules' negation of the
edit prompt itself (the request's ``opposite_template``), which the negation probe's PN asks;
neither form here is that query, so both stay unmarked for every editor (QueryForm.NEGATED_PARAPHRASE).
Teacher-forced exact match of o*, as the negation probe (lower is better).
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from ...data.negation import negate, negation_function, record_negation
from ...forms import QueryForm
from ..base import TEACHER_FORCED_EM, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, floor_flag, has_old_object, per_record_hits
from ..battery_queries import (
    Query, ask, known_at, known_only, known_share, sample_rows)

NPARA, NALT, PLAIN = "NPara", "NAlt", "paraphrase"
# The second negation form: the edit prompt behind this, e.g. "It is not true that the mother
# tongue of Danielle Darrieux is" (our wording; a cloze for o* whatever the template).
ALT_PREFIX = "It is not true that "
# Sentence-openers lowercased behind ALT_PREFIX; any other first word (a name) keeps its case.
_LOWERED = frozenset({"the", "a", "an", "in", "on", "at", "this", "that", "its", "his", "her", "their", "one"})
# Where a paraphrase's sentence starts: CounterFact paraphrases carry an unrelated prefix
# ("Shayna does this and Yossel goes still and dies. Danielle Darrieux, a native"); only the
# sentence naming the subject is negated, so the rules never negate the prefix's verb.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

SKIP_NO_PARAPHRASE = "no paraphrase prompts"
SKIP_SUBJECT = "the paraphrase does not name the subject exactly once"
SKIP_BRACES = "the paraphrase holds braces"
SKIP_QUESTION_ALT = "question record: no statement to put behind 'It is not true that'"

_EM = TEACHER_FORCED_EM
LABELS = {
    NPARA: f"{_EM}: o* after each negated paraphrase (the sentence naming the subject negated by the negation "
           "rules / table), share of a record's negated paraphrases, mean over records; held out (no editor "
           "trains on it)",
    NALT: f"{_EM}: o* after 'It is not true that <edit prompt>', per record, mean over records; held out "
          "(no editor trains on it)",
}
NO_EDIT_LABELS = {
    NPARA: f"{_EM}, unedited model: o after each negated paraphrase, over the paraphrases whose plain form it "
           "completes with o; share per record, mean over records",
    NALT: f"{_EM}, unedited model: o after 'It is not true that <edit prompt>', over the records whose edit "
          "prompt it completes with o",
}


def _negate_fn(ctx: ProbeContext):
    return negation_function(getattr(ctx.config, "negation_table", None)) or negate


def negated_paraphrase(paraphrase: str, record, negate_fn=negate) -> tuple[str | None, str]:
    """(the paraphrase with its subject's sentence negated, the rule) or (None, why not)."""
    subject = record.subject
    if paraphrase.count(subject) != 1:
        return None, SKIP_SUBJECT
    if "{" in paraphrase or "}" in paraphrase:
        return None, SKIP_BRACES
    at = paraphrase.index(subject)
    cut = max((m.end() for m in _SENTENCE_END.finditer(paraphrase, 0, at)), default=0)
    head, sentence = paraphrase[:cut], paraphrase[cut:]
    as_record = record.model_copy(update={"template": sentence.replace(subject, "{}"), "negated_prompt": None})
    negation = record_negation(as_record, negate_fn)
    if not negation.ok or negation.negated is None or negation.negated.count("{}") != 1:
        return None, f"unnegatable: {negation.reason or 'no rule negates it'}"
    return head + negation.negated.format(subject), negation.rule


def alt_query(record) -> str | None:
    """"It is not true that <the edit prompt>", or None for a question record."""
    if record.is_question:
        return None
    query = record.query
    first = query.split(" ", 1)[0]
    if not record.template.startswith("{}") and first.lower() in _LOWERED:
        query = query[0].lower() + query[1:]
    return ALT_PREFIX + query


def plan_queries(records, negate_fn=negate) -> tuple[list[dict[str, str]], list[dict[str, str]], dict[str, int]]:
    """(paraphrase pairs {record_id, key, plain, negated}, alternative forms {record_id, query},
    skip reason -> count): what the probe asks of ``records``."""
    pairs, alts, skipped = [], [], Counter()
    for r in records:
        if not r.paraphrase_prompts:
            skipped[SKIP_NO_PARAPHRASE] += 1
        for k, p in enumerate(r.paraphrase_prompts):
            negated, why = negated_paraphrase(p, r, negate_fn)
            if negated is None:
                skipped[why] += 1
            else:
                pairs.append({"record_id": r.id, "key": f"{r.id}#{k}", "plain": p, "negated": negated})
        alt = alt_query(r)
        if alt is None:
            skipped[SKIP_QUESTION_ALT] += 1
        else:
            alts.append({"record_id": r.id, "query": alt})
    return pairs, alts, dict(skipped)


def _queries(pairs, alts, target_of, plain: bool) -> list[Query]:
    """The negated queries with each record's target (``target_of(record_id)``; None: not asked),
    and with ``plain`` the plain paraphrases too."""
    out: list[Query] = []
    for p in pairs:
        target = target_of(p["record_id"])
        if target is None:
            continue
        if plain:
            out.append({"record_id": p["record_id"], "setting": PLAIN, "key": p["key"], "query": p["plain"],
                        "expected": target})
        out.append({"record_id": p["record_id"], "setting": NPARA, "key": p["key"], "query": p["negated"],
                    "expected": target})
    out += [{"record_id": a["record_id"], "setting": NALT, "key": a["record_id"], "query": a["query"],
             "expected": target_of(a["record_id"])} for a in alts if target_of(a["record_id"]) is not None]
    return out


@register_probe
class HeldOutNegationProbe(Probe):
    name = "heldout-negation"
    stages = ("baseline", "positive")
    description = "o* after negated paraphrases and after 'It is not true that ...' (negations no editor trains on)"
    table = BATTERY_TABLE
    # Opt-in [measured]: with it in the default set the battery would cost more than 30 % of a run's
    # evaluation (docs/battery.md#cost; make bench, stage "battery").
    default = False
    # Both are negations no editor's training sees (defend trains the rules' negation of the
    # edit prompt, asked by the negation probe's PN): held out by design.
    metric_forms = {NPARA: frozenset({QueryForm.NEGATED_PARAPHRASE}),
                    NALT: frozenset({QueryForm.NEGATED_PARAPHRASE})}

    def applies_to(self, ctx: ProbeContext) -> bool:
        pairs, alts, _ = plan_queries(ctx.records, _negate_fn(ctx))
        return bool(pairs or alts)

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        known, ids, records = known_at(ctx, stage, baseline)
        pairs, alts, skipped = plan_queries(records, _negate_fn(ctx))
        by_id = {r.id: r for r in records}
        if stage == "baseline":  # the true fact o, where the record has one
            target_of = lambda rid: by_id[rid].target_true if has_old_object(by_id[rid]) else None  # noqa: E731
        else:
            target_of = lambda rid: by_id[rid].target_new  # noqa: E731
        asked = ask(ctx, _queries(pairs, alts, target_of, plain=stage == "baseline"))
        return {"asked": known + asked, "known_ids": ids, "skipped": skipped, "known_only": known_only(ctx),
                "n_records": len(records)}

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        asked = baseline["asked"]
        plain_hits = {q["key"] for q in asked if q["setting"] == PLAIN and q["match"]}
        known = set(baseline["known_ids"])
        npara = per_record_hits((q["record_id"], q["match"]) for q in asked
                                if q["setting"] == NPARA and q["key"] in plain_hits)
        nalt = per_record_hits((q["record_id"], q["match"]) for q in asked
                               if q["setting"] == NALT and q["record_id"] in known)
        metrics = {name: Metric.of_records(values, NO_EDIT_LABELS[name], higher_is_better=False)
                   for name, values in ((NPARA, npara), (NALT, nalt)) if values}
        share, n = known_share(asked)
        note = None if metrics else "no No-edit row: no record has an old object the unedited model completes"
        return self.outcome(metrics, flag=floor_flag(share), known=share, n_with_old_object=n, note=note,
                            skipped=baseline["skipped"], known_only=baseline["known_only"]), \
            sample_rows(asked, self.name, "none")

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after, base = states["positive"], states.get("baseline") or {}
        asked = after["asked"]
        metrics = {}
        for name in (NPARA, NALT):
            values = per_record_hits((q["record_id"], q["match"]) for q in asked if q["setting"] == name)
            if values:
                metrics[name] = Metric.of_records(values, LABELS[name], higher_is_better=False)
        share, _ = known_share(base.get("asked", []))
        return self.outcome(metrics, flag=floor_flag(share), skipped=after["skipped"],
                            known_only=after["known_only"], n_records=after["n_records"]), \
            sample_rows(asked, self.name, "positive")


__all__ = ["HeldOutNegationProbe", "negated_paraphrase", "alt_query", "plan_queries"]
