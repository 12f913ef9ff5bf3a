"""KnowEdit's prompt kinds as battery rows (docs/battery.md#knowedit-kinds): WikiData-Counterfact
and KnowEdit's zsRE test carry ``locality.Relation_Specificity`` (the edited subject under other
relations, with their true answers) and ``portability.Subject_Aliasing`` (the edited prompt with
the subject named otherwise, answered by o*); the neighborhood and portability probes pool them
with the other kinds. Here each kind is its own metric, under the protocol its pool uses:

- ``Relation_Specificity``: EasyEdit's locality — at each token of the prompt's answer
  (teacher-forced), whether the edited model's argmax equals the unedited model's; beside it
  ``Relation_Specificity_truth``: the teacher-forced token accuracy of the answer itself
  (still answered with the ground truth). Its No-edit value is the unedited model's knowledge
  of those facts (the floor flag reads it).
- ``Subject_Aliasing``: EasyEdit's portability — the teacher-forced token accuracy of the
  prompt's answer (o*) after each alias prompt; No edit: of the old object o after them.

Per record as its pool does it: the Relation_Specificity metrics over all the tokens of the
record's prompts together (the neighborhood probe), Subject_Aliasing the mean of its prompts'
token accuracies (the portability probe); then the mean over records.
"""

from __future__ import annotations

from typing import Any

from ...data.formats import formats_of
from ...forms import QueryForm
from ..base import TEACHER_FORCED_TOKENS, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, floor_flag, known_fact_ids, known_records
from ..scoring import teacher_forced

SPECIFICITY, ALIASING = "Relation_Specificity", "Subject_Aliasing"
TRUTH = f"{SPECIFICITY}_truth"
KINDS = (SPECIFICITY, ALIASING)

LABELS = {
    SPECIFICITY: (f"{TEACHER_FORCED_TOKENS}: KnowEdit Relation_Specificity prompts, the edited model's argmax equals "
                  "the unedited model's at each token of the prompt's answer (EasyEdit locality); mean over the "
                  "tokens of a record's prompts, then over records"),
    TRUTH: (f"{TEACHER_FORCED_TOKENS}: KnowEdit Relation_Specificity prompts, their own answer (ground truth); "
            "mean over the tokens of a record's prompts, then over records"),
    ALIASING: (f"{TEACHER_FORCED_TOKENS}: o* after KnowEdit's Subject_Aliasing prompts (the edited prompt with the "
               "subject's aliases; EasyEdit portability); mean over a record's prompts, then over records"),
}
NO_EDIT_LABELS = {
    TRUTH: LABELS[TRUTH].replace("prompts, their own", "prompts, unedited model, their own"),
    ALIASING: (f"{TEACHER_FORCED_TOKENS}: unedited model, the old object o after KnowEdit's Subject_Aliasing prompts; "
               "mean over a record's prompts, then over records"),
}
NO_EDIT_NOTE = (f"{SPECIFICITY} (agreement with the unedited model) is 100 on the unedited model by definition and "
                f"not shown; its No-edit value on the true fact is {TRUTH}")


def kind_prompts(record, kind: str) -> list[tuple[str, str]]:
    """(prompt, answer) of one kind in the record; an alias prompt's answer is o*."""
    pool = record.neighborhood if kind == SPECIFICITY else record.portability
    return [(pa.prompt, pa.answers[0]) for pa in pool if pa.kind == kind and pa.answers]


@register_probe
class KnowEditKindsProbe(Probe):
    name = "knowedit-kinds"
    description = "KnowEdit's Relation_Specificity and Subject_Aliasing prompts, each kind its own metric"
    table = BATTERY_TABLE
    # An alias prompt is the edited prompt with the subject reworded: a paraphrase of the edit
    # (an editor trained on rewordings of its prompt is marked there).
    metric_forms = {SPECIFICITY: frozenset({QueryForm.OTHER_RELATION}), TRUTH: frozenset({QueryForm.OTHER_RELATION}),
                    ALIASING: frozenset({QueryForm.PARAPHRASE})}

    def applies_to(self, ctx: ProbeContext) -> bool:
        return any(kind_prompts(r, k) for r in ctx.records for k in KINDS)

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        known = known_fact_ids(ctx) if stage == "baseline" else (baseline or {}).get("known")
        rows = []  # (record id, kind, prompt, target)
        for r in known_records(ctx.records, known):
            rows += [(r.id, SPECIFICITY, p, a) for p, a in kind_prompts(r, SPECIFICITY)]
            # The unedited model is asked the true fact o, the edited one o*.
            alias_target = r.target_true if stage == "baseline" else None
            if stage != "baseline" or r.target_true:
                rows += [(r.id, ALIASING, p, alias_target or a) for p, a in kind_prompts(r, ALIASING)]
        scores = teacher_forced(ctx.model, ctx.tokenizer, [(ctx.transform.completion(p), t) for _, _, p, t in rows],
                                logprobs=False)
        return {"record_ids": [x[0] for x in rows], "kinds": [x[1] for x in rows], "prompts": [x[2] for x in rows],
                "targets": [x[3] for x in rows], "hits": [s.token_hits for s in scores],
                "predicted": [list(s.predicted) for s in scores], "known": known,
                "locality": any(fmt.has_locality for fmt in formats_of(ctx.records))}

    def _values(self, state: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, list[tuple[str, Any]]]:
        """metric -> [(row index, token hits)]: agreement with the unedited model for
        Relation_Specificity (where the format's locality is EasyEdit's), the target's tokens otherwise."""
        reference = None if baseline is None else dict(zip(_keys(baseline), baseline["predicted"]))
        keys = _keys(state)
        out: dict[str, list[tuple[int, list[bool]]]] = {}
        for i, (kind, hits) in enumerate(zip(state["kinds"], state["hits"])):
            if kind == SPECIFICITY:
                out.setdefault(TRUTH, []).append((i, hits))
                if reference is not None and state["locality"]:
                    ref = reference.get(keys[i], [])
                    out.setdefault(SPECIFICITY, []).append((i, [a == b for a, b in zip(state["predicted"][i], ref)]))
                elif reference is not None:
                    out.setdefault(SPECIFICITY, []).append((i, hits))
            else:
                out.setdefault(ALIASING, []).append((i, hits))
        return {k: out[k] for k in (SPECIFICITY, TRUTH, ALIASING) if k in out}

    def _result(self, state: dict[str, Any], baseline: dict[str, Any] | None, edited_with: str,
                labels: dict[str, str]) -> tuple[dict[str, Metric], Rows]:
        metrics, rows = {}, []
        for metric, items in self._values(state, baseline).items():
            per_record: dict[str, list[float]] = {}
            for i, hits in items:
                # As each pool does: locality pools a record's tokens (the neighborhood probe),
                # portability averages its questions' token accuracies.
                if hits:
                    per_record.setdefault(state["record_ids"][i], []).extend(
                        hits if metric != ALIASING else [sum(hits) / len(hits)])
                rows.append({"edited_with": edited_with, "record_id": state["record_ids"][i],
                             "setting": f"{self.name}/{metric}", "probe": self.name, "query": state["prompts"][i],
                             "expected": state["targets"][i], "generated": None, "match": bool(hits) and all(hits),
                             "token_accuracy": sum(hits) / len(hits) if hits else None})
            metrics[metric] = Metric.of_records({rid: sum(v) / len(v) for rid, v in per_record.items()},
                                                labels[metric])
        return metrics, rows

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        metrics, rows = self._result(baseline, None, "none", NO_EDIT_LABELS)
        flags = {k: floor_flag(m.value) for k, m in metrics.items()}
        return self.outcome(metrics, flag=_first(flags), flags=flags, note=NO_EDIT_NOTE,
                            known_only=baseline["known"] is not None), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        base = states.get("baseline")
        metrics, rows = self._result(states["positive"], base, "positive", LABELS)
        flags = {}
        if base is not None:
            flags = {k: floor_flag(m.value) for k, m in self._result(base, None, "none", NO_EDIT_LABELS)[0].items()}
            flags[SPECIFICITY] = flags.get(TRUTH)
        return self.outcome(metrics, flag=_first(flags), flags=flags, known_only=states["positive"]["known"]
                            is not None), rows


def _keys(state: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    return list(zip(state["record_ids"], state["kinds"], state["prompts"], state["targets"]))


def _first(flags: dict[str, str | None]) -> str | None:
    """The probe's flag: the first of its metrics' flags (each metric's own is in ``flags``)."""
    return next((f"{k}: {v}" for k, v in flags.items() if v), None)
