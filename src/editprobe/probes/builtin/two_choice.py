"""The two-choice probe (docs/battery.md#two-choice): "Q: <question> A) o B) o* Answer:" and
the same with the options swapped, every record asked in both orders; the model's pick is
the letter whose continuation (" A" or " B") is the likelier, teacher-forced after the
query, one forward pass per query. An edit that is knowledge picks o* in both orders (`both`);
`any` counts one order; `A-bias` is the share of all queries answered A (position bias).
The seed decides which order is a record's main sample row (shown first).

The question is the question-forms probe's (questions.py); where a template has no entry,
the generic "<edit prompt with the subject> ___?". A record without an old object (zsRE in
answers mode, WCF with an empty ground truth) is offered another record's target under the
same template instead, chosen by seed, and skipped (counted) where there is none; the
No-edit row asks the unedited model to pick the true object o, so it skips those records.
"""

from __future__ import annotations

import random
from typing import Any

from ...forms import QueryForm
from ...models.tokens import continuation_ids
from ..base import TEACHER_FORCED_PROB, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, floor_flag
from ..generation import query_ids
from ..questions import NO_OLD_OBJECT, bare_question, count, has_true_object, scored_records, table_of
from ..scoring import score_and_decode

NAME = "two-choice"
LETTERS = ("A", "B")
CHANCE_BOTH = 25.0  # a model picking at random picks o* in both orders a quarter of the time
GENERIC = "generic form '<edit prompt> ___?'"
NO_DISTRACTOR = "no old object and no other target under its template to offer instead"
_LABEL = (f"{TEACHER_FORCED_PROB} of the next token ' A' vs ' B' after 'Q: <question> A) x B) y Answer:', "
          "both orders asked per record")
LABELS = {"both": f"{_LABEL}; % records picking the target in both orders (chance 25)",
          "any": f"{_LABEL}; % records picking the target in at least one order (chance 75)",
          "A-bias": f"{_LABEL}; % of all queries answered A (position bias; 50 = none)"}
HIGHER = {"both": True, "any": True, "A-bias": None}


def choice_query(question: str, first: str, second: str) -> str:
    return f"Q: {question} A) {first} B) {second} Answer:"


def _question(record, table) -> tuple[str, str]:
    question, source = bare_question(record, table)
    if question is None:
        return f"{record.query} ___?", GENERIC
    return question, source


def _distractors(records: list, seed: int) -> dict[str, str | None]:
    """record id -> the option offered beside o*: o, or (no o) another record's target under
    the same template, chosen by seed; None where there is none."""
    by_template: dict[str, list[str]] = {}
    for r in records:
        by_template.setdefault(" ".join(r.template.split()), []).append(r.target_new)
    out: dict[str, str | None] = {}
    for r in records:
        if has_true_object(r):
            out[r.id] = r.target_true
            continue
        others = sorted({t for t in by_template[" ".join(r.template.split())] if t.strip().lower() !=
                         r.target_new.strip().lower()})
        out[r.id] = random.Random(f"{seed}:{r.id}").choice(others) if others else None
    return out


def _main_first(seed: int, record_id: str) -> bool:
    """Whether the record's main order puts the target first (A), by seed."""
    return random.Random(f"{seed}:{record_id}:order").random() < 0.5


def _ask(ctx: ProbeContext, asked: list[dict[str, Any]]) -> None:
    """Pick a letter for every query: one pass over the query, both letters teacher-forced."""
    tok, queries = ctx.tokenizer, ctx.transform.completions([a["query"] for a in asked])
    letters = [[continuation_ids(tok, q, letter) for letter in LETTERS] for q in queries]
    scores, _ = score_and_decode(ctx.model, tok, [query_ids(tok, q) for q in queries], letters)
    for a, (sa, sb) in zip(asked, scores):
        lp_a, lp_b = sum(sa.logprobs), sum(sb.logprobs)
        a.update(generated="A" if lp_a >= lp_b else "B", logprob_A=round(lp_a, 4), logprob_B=round(lp_b, 4))
        a["match"] = a["generated"] == a["expected"][0]


@register_probe
class TwoChoiceProbe(Probe):
    name = NAME
    stages = ("baseline", "positive")
    description = "the edited fact as a two-choice question, both orders, picked by the letter's probability"
    table = BATTERY_TABLE
    metric_forms = {m: frozenset({QueryForm.TWO_CHOICE}) for m in LABELS}

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        records, known = scored_records(ctx, stage, baseline)
        seed, table = getattr(ctx.config, "seed", 0), table_of(ctx)
        offered = _distractors(ctx.records, seed)  # substitutes come from all the dataset's records
        asked: list[dict[str, Any]] = []
        skipped, sources = [], []
        for r in records:
            if stage == "baseline":
                target, other, reason = r.target_true, r.target_new, NO_OLD_OBJECT
            else:
                target, other, reason = r.target_new, offered[r.id], NO_DISTRACTOR
            if not (target and target.strip()) or other is None:
                skipped.append(reason)
                continue
            question, source = _question(r, table)
            sources.append(source)
            first = _main_first(seed, r.id)
            for target_first in (first, not first):
                options = (target, other) if target_first else (other, target)
                letter = "A" if target_first else "B"
                asked.append({"record_id": r.id, "setting": f"target={letter}", "probe": NAME,
                              "query": choice_query(question, *options), "expected": f"{letter} ({target})",
                              "main": target_first == first})
        if asked:
            _ask(ctx, asked)
        return {"samples": asked, "skipped": count(skipped), "sources": count(sources), "known": known}

    def _outcome(self, state: dict[str, Any], flag: str | None) -> ProbeOutcome:
        picks: dict[str, list[dict[str, Any]]] = {}
        for s in state["samples"]:
            picks.setdefault(s["record_id"], []).append(s)
        per = {"both": {rid: float(all(s["match"] for s in ss)) for rid, ss in picks.items()},
               "any": {rid: float(any(s["match"] for s in ss)) for rid, ss in picks.items()},
               "A-bias": {rid: sum(s["generated"] == "A" for s in ss) / len(ss) for rid, ss in picks.items()}}
        metrics = {m: Metric.of_records(v, LABELS[m], higher_is_better=HIGHER[m]) for m, v in per.items()}
        return self.outcome(metrics, skipped=state["skipped"], sources=state["sources"],
                            known_only=state["known"] is not None, chance={"both": CHANCE_BOTH, "any": 75.0}, flag=flag)

    def _flag(self, baseline: dict[str, Any]) -> str | None:
        return floor_flag(self._outcome(baseline, None).value("both"), chance=CHANCE_BOTH)

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        rows = [{"edited_with": "none", **s} for s in baseline["samples"]]
        return self._outcome(baseline, self._flag(baseline)), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after = states["positive"]
        flag = self._flag(states["baseline"]) if "baseline" in states else None
        rows = [{"edited_with": "positive", **s} for s in after["samples"]]
        return self._outcome(after, flag), rows
