"""Relation specificity, or subject bleed (docs/battery.md#subject-bleed; EVOKE, RippleEdits):
after editing "the mother tongue of X is English", prompts about X under *other* relations
("X was born in", "The religion of X is") should not start answering "English".

Prompts per record: up to ``PER_SOURCE`` of the generic relation templates below whose relation
differs from the record's (chosen by the run seed), plus up to ``PER_SOURCE`` of the dataset's
own other facts about the subject (other records of the run with the same subject and another
template; MQuAKE's single-hop clozes that name the subject; KnowEdit's Relation_Specificity
prompts), never one whose known answer is o* itself. ``bleed`` = the share of a record's
prompts after which greedy decoding gives o* (teacher-forced exact match) on the edited model
but did not on the unedited one; ``changed`` = the share whose first greedy tokens differ from
the unedited model's at all. The No-edit row shows how often o* already follows (the rate the
baseline correction removes)."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

from ...forms import QueryForm
from ..base import TEACHER_FORCED_EM, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, known_fact_ids, known_records, per_record_hits
from ..exact import match_and_decode


@dataclass(frozen=True)
class RelationTemplate:
    """A generic relation, and what marks a record's template (or Wikidata relation) as the
    same relation, where its answer may rightly become o*."""

    template: str
    cues: tuple[str, ...]  # lowercase word stems
    relation_ids: tuple[str, ...] = ()


# Written for this probe: relations that fit persons, places, organisations and works.
RELATIONS: tuple[RelationTemplate, ...] = (
    RelationTemplate("{} was born in", ("born", "birth"), ("P19",)),
    RelationTemplate("{} works in the field of", ("field", "work", "profession", "occupation", "job"),
                     ("P101", "P106")),
    RelationTemplate("The official language of {} is", ("language", "tongue", "speak"), ("P37", "P103", "P364",
                                                                                          "P1412")),
    RelationTemplate("{} is located in", ("locat", "country", "city", "continent", "situated"),
                     ("P17", "P131", "P30", "P276")),
    RelationTemplate("The headquarters of {} is in", ("headquarter", "based"), ("P159",)),
    RelationTemplate("The creator of {} is", ("creat", "author", "writ", "develop", "produc", "made", "manufactur"),
                     ("P170", "P50", "P178", "P176")),
    RelationTemplate("{} is a member of", ("member", "belong", "part of", "affiliat", "team", "plays for"),
                     ("P463", "P54")),
    RelationTemplate("The religion of {} is", ("religio", "faith"), ("P140",)),
)
PER_SOURCE = 3  # generic templates, and the dataset's own facts, each at most this many per record
CHANGED_TOKENS = 3  # "changed": the first this many greedy tokens differ from the unedited model's
DECODE_EXTRA = 3  # greedy tokens decoded past o* for the sample rows

BLEED_LABEL = (f"{TEACHER_FORCED_EM}: o* after prompts about the edited subject under other relations (generic "
               "templates + the dataset's other facts of the subject), counted only where o* did not follow on the "
               "unedited model; share of a record's prompts, then mean over records (EVOKE/RippleEdits)")
CHANGED_LABEL = (f"greedy decoding: the first {CHANGED_TOKENS} tokens after those prompts differ from the unedited "
                 "model's; share of a record's prompts, then mean over records")
NO_EDIT_LABEL = (f"{TEACHER_FORCED_EM}: unedited model, o* after the same prompts (the rate the baseline "
                 "correction removes); share of a record's prompts, then mean over records")
NO_FLAG = ("no floor flag: the no-edit value is how often o* already follows (lower is cleaner), not knowledge of "
           "the true fact")


def _same_relation(record, relation: RelationTemplate) -> bool:
    wording = record.template.lower()
    if wording == relation.template.lower():
        return True
    return (record.relation_id in relation.relation_ids) or any(c in wording for c in relation.cues)


def _names(text: str, subject: str) -> bool:
    """Whether ``text`` names ``subject`` as a whole word sequence."""
    return re.search(rf"(?<!\w){re.escape(subject)}(?!\w)", text) is not None


def _own_facts(record, records: list) -> list[tuple[str, str]]:
    """(prompt, source) of the dataset's other facts about the record's subject: other records
    with the same subject and another template, MQuAKE single hops naming it, KnowEdit's
    Relation_Specificity prompts; none whose answer is o* (there o* is right) or is the record's query."""
    new, subject = record.target_new.casefold(), record.subject.casefold()
    found: dict[str, str] = {}
    for other in records:
        if other.subject.casefold() == subject and other.template != record.template \
                and new not in {other.target_new.casefold(), (other.target_true or "").casefold()}:
            found.setdefault(other.query, "record")
        for hop in other.extra.get("single_hops") or ():
            if _names(hop["cloze"], record.subject) and hop["answer"].casefold() != new:
                found.setdefault(hop["cloze"], "single-hop")
    for pa in record.neighborhood:
        if pa.kind == "Relation_Specificity" and _names(pa.prompt, record.subject) \
                and new not in {a.casefold() for a in pa.answers}:
            found.setdefault(pa.prompt, "Relation_Specificity")
    own = {record.query, *record.paraphrase_prompts}
    return [(p, s) for p, s in found.items() if p not in own]


def bleed_prompts(record, records: list, seed: int) -> list[tuple[str, str]]:
    """(prompt, source) for one record, chosen by ``seed`` (the same for any order of records)."""
    rng = random.Random(f"subject-bleed/{seed}/{record.id}")
    generic = [r for r in RELATIONS if not _same_relation(record, r)]
    chosen = sorted(rng.sample(range(len(generic)), min(PER_SOURCE, len(generic))))
    prompts = [(generic[i].template.format(record.subject), "template") for i in chosen]
    own = _own_facts(record, records)
    prompts += [own[i] for i in sorted(rng.sample(range(len(own)), min(PER_SOURCE, len(own))))]
    return prompts


@register_probe
class SubjectBleedProbe(Probe):
    name = "subject-bleed"
    description = "prompts about the edited subject under other relations: does o* bleed into them?"
    table = BATTERY_TABLE
    # Opt-in [measured]: with it in the default set the battery would cost more than 30 % of a run's
    # evaluation (docs/battery.md#cost; make bench, stage "battery").
    default = False
    metric_forms = {"bleed": frozenset({QueryForm.OTHER_RELATION}), "changed": frozenset({QueryForm.OTHER_RELATION})}

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        if stage == "baseline" or baseline is None:
            known = known_fact_ids(ctx) if stage == "baseline" else None
            seed = getattr(ctx.config, "seed", 0)
            rows = [(r.id, p, s, r.target_new) for r in known_records(ctx.records, known)
                    for p, s in bleed_prompts(r, ctx.records, seed)]
            plan = {"record_ids": [x[0] for x in rows], "prompts": [x[1] for x in rows],
                    "sources": [x[2] for x in rows], "targets": [x[3] for x in rows], "known": known}
        else:
            plan = {k: baseline[k] for k in ("record_ids", "prompts", "sources", "targets", "known")}
        asked = [ctx.transform.completion(p) for p in plan["prompts"]]
        matches, decoded = match_and_decode(ctx.model, ctx.tokenizer, list(zip(asked, plan["targets"])), DECODE_EXTRA)
        return {**plan, "hits": matches, "greedy": [list(d.ids[:CHANGED_TOKENS]) for d in decoded or []],
                "generated": [d.text for d in decoded or []]}

    def _rows(self, state: dict[str, Any], edited_with: str, match: list[bool], extra: dict[str, list]) -> Rows:
        return [{"edited_with": edited_with, "record_id": rid, "setting": f"{self.name}/{source}", "probe": self.name,
                 "query": prompt, "expected": target, "generated": text, "match": hit,
                 **{k: v[i] for k, v in extra.items()}}
                for i, (rid, prompt, source, target, text, hit) in enumerate(zip(
                    state["record_ids"], state["prompts"], state["sources"], state["targets"], state["generated"],
                    match))]

    def _details(self, state: dict[str, Any]) -> dict[str, Any]:
        sources: dict[str, int] = {}
        for s in state["sources"]:
            sources[s] = sources.get(s, 0) + 1
        known = state.get("known")
        return {"n_prompts": len(state["prompts"]), "sources": sources, "flag": None, "flag_note": NO_FLAG,
                "known_only": known is not None, "n_known": None if known is None else len(known)}

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        if not baseline["prompts"]:
            return None, []
        per_record = per_record_hits(zip(baseline["record_ids"], baseline["hits"]))
        metrics = {"bleed": Metric.of_records(per_record, NO_EDIT_LABEL, higher_is_better=False)}
        return self.outcome(metrics, **self._details(baseline)), self._rows(baseline, "none", baseline["hits"], {})

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after, before = states["positive"], states.get("baseline")
        if before is None or before["prompts"] != after["prompts"]:
            raise ValueError("subject-bleed: the edited model's prompts differ from the baseline's")
        bleed = [a and not b for a, b in zip(after["hits"], before["hits"])]
        changed = [a != b for a, b in zip(after["greedy"], before["greedy"])]
        ids = after["record_ids"]
        metrics = {"bleed": Metric.of_records(per_record_hits(zip(ids, bleed)), BLEED_LABEL, higher_is_better=False),
                   "changed": Metric.of_records(per_record_hits(zip(ids, changed)), CHANGED_LABEL,
                                                higher_is_better=False)} if ids else {}
        rows = self._rows(after, "positive", bleed, {"after_match": after["hits"], "before_match": before["hits"],
                                                     "changed": changed})
        return self.outcome(metrics, **self._details(after)), rows
