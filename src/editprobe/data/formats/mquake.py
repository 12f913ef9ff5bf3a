"""MQuAKE: a case with several ``requested_rewrite``s and multi-hop ``questions``.

Each rewrite becomes one record (id ``{case_id}_{j}``, ``case_id`` links them); the case's
multi-hop questions, answered by the post-edit answer and its aliases, are the
portability probes of every record of the case.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..fields import RawEntry, template_from_prompt
from ..records import EditRecord, PromptAnswer
from .base import DatasetFormat, register_format

NAME = "mquake"


def matches(raw: Mapping[str, Any]) -> bool:
    return isinstance(raw.get("requested_rewrite"), list)


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    case_id = entry.identifier("case_id") or str(index)
    questions = entry.texts("questions")
    multi_hop: tuple[PromptAnswer, ...] = ()
    if questions:
        answers = (entry.text("new_answer"),) + entry.answers("new_answer_alias")
        multi_hop = tuple(PromptAnswer(prompt=q, answers=tuple(dict.fromkeys(answers)), kind="multi_hop") for q in questions)
    rewrites = entry.children("requested_rewrite")
    hops = _single_hops(entry)
    records = []
    for j, rewrite in enumerate(rewrites):
        subject = rewrite.text("subject")
        extra: dict[str, Any] = {"edit_index": j, "n_edits": len(rewrites)}
        question = rewrite.optional_text("question")
        if question:
            extra["question"] = question  # a single-hop question about this very edit
        if hops:
            extra["single_hops"] = hops  # the case's facts one by one (subject-bleed asks them)
        records.append(
            EditRecord(
                id=f"{case_id}_{j}",
                subject=subject,
                template=template_from_prompt(rewrite, "prompt", subject),
                target_new=rewrite.child("target_new").text("str"),
                target_true=rewrite.child("target_true").text("str") if rewrite.has("target_true") else None,
                relation_id=rewrite.identifier("relation_id"),
                portability=multi_hop,
                case_id=case_id,
                source_format=NAME,
                extra=extra,
            )
        )
    return records


def _single_hops(entry: RawEntry) -> list[dict[str, str]]:
    """The case's single-hop facts, before and after the edits, as ``{cloze, answer}`` (each
    cloze once): the dataset's own facts about its subjects, for the subject-bleed probe."""
    hops: dict[str, str] = {}
    for key in ("single_hops", "new_single_hops"):
        items = entry.get(key)
        # Optional context, not the edit: a malformed item is passed over, not an error.
        for hop in items if isinstance(items, list) else ():
            cloze, answer = (hop.get("cloze"), hop.get("answer")) if isinstance(hop, dict) else (None, None)
            if isinstance(cloze, str) and isinstance(answer, str) and cloze.strip() and answer.strip():
                hops.setdefault(cloze.strip(), answer.strip())
    return [{"cloze": c, "answer": a} for c, a in hops.items()]


FORMAT = DatasetFormat(
    name=NAME,
    description="MQuAKE: requested_rewrite is a list (one record per rewrite) + multi-hop questions",
    matches=matches,
    convert=convert,
    protocol="prob",
    kind="mquake",
)
register_format(FORMAT, first=False)
