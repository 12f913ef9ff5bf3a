"""zsRE in the MEND/ROME format: ``{subject, src, alt, answers, rephrase, loc, loc_ans}``
(+ an optional ``portability``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FieldError
from ..fields import RawEntry, negated_prompt, prompt_answers, template_from_prompt
from ..records import EditRecord, PromptAnswer
from .base import DatasetFormat, record_id, register_format

NAME = "zsre"


def matches(raw: Mapping[str, Any]) -> bool:
    return "src" in raw and "alt" in raw


def _portability(entry: RawEntry) -> tuple[PromptAnswer, ...]:
    if not entry.has("portability"):
        return ()
    raw = entry.get("portability")
    if isinstance(raw, dict) and "New Question" in raw:
        # EasyEdit's zsRE portability: one question about a fact one hop from the edit.
        port = entry.child("portability")
        return (PromptAnswer(prompt=port.text("New Question"), answers=port.answers("New Answer", required=True), kind="one_hop"),)
    return prompt_answers(entry, "portability")  # KnowEdit-style {kind: [{prompt, ground_truth}]}


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    subject = entry.text("subject")
    answers = entry.answers("answers", required=True)
    neighborhood: tuple[PromptAnswer, ...] = ()
    if entry.has("loc"):
        if not entry.has("loc_ans"):
            raise FieldError(entry.path("loc_ans"), "missing (required with 'loc')")
        # The MEMIT and AlphaEdit loaders ask "nq question: ...?": the file's loc has no "?".
        loc = entry.text("loc")
        loc = loc if loc.endswith("?") else f"{loc}?"
        neighborhood = (PromptAnswer(prompt=loc, answers=entry.answers("loc_ans", required=True), kind="nq"),)
    extra: dict[str, Any] = {}
    if len(answers) > 1:
        extra["answers"] = list(answers)
    for key in ("pred", "cond"):
        if entry.has(key):
            extra[key] = entry.get(key)
    port = entry.get("portability")
    if isinstance(port, dict) and isinstance(port.get("Recalled Relation"), str):
        extra["recalled_relation"] = port["Recalled Relation"]
    return [
        EditRecord(
            id=record_id(entry, index),
            subject=subject,
            template=template_from_prompt(entry, "src", subject),
            target_new=entry.text("alt"),
            target_true=answers[0],
            paraphrase_prompts=entry.texts("rephrase"),
            neighborhood=neighborhood,
            portability=_portability(entry),
            source_format=NAME,
            negated_prompt=negated_prompt(entry, subject),
            is_question=True,
            extra=extra,
        )
    ]


FORMAT = DatasetFormat(
    name=NAME,
    description="zsRE (MEND format): subject, src (question), alt, answers, rephrase, loc, loc_ans",
    matches=matches,
    convert=convert,
    protocol="tokens",
    kind="zsre",
)
register_format(FORMAT, first=False)
