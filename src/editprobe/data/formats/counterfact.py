"""CounterFact / MCF (ROME format): one ``requested_rewrite`` object per record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FieldError
from ..fields import RawEntry, negated_prompt, template_from_prompt
from ..records import EditRecord, PromptAnswer
from .base import DatasetFormat, register_format

NAME = "counterfact"


def matches(raw: Mapping[str, Any]) -> bool:
    return isinstance(raw.get("requested_rewrite"), dict)


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    rewrite = entry.child("requested_rewrite")
    subject = rewrite.text("subject")
    target_true = rewrite.child("target_true").text("str") if rewrite.has("target_true") else None
    # Neighborhood prompts are about other subjects that share the *true* object, so
    # their expected answer is target_true; without it they cannot be scored.
    neighborhood = entry.texts("neighborhood_prompts")
    if neighborhood and target_true is None:
        raise FieldError(rewrite.path("target_true"), "missing (it is the answer of neighborhood_prompts)")
    extra: dict[str, Any] = {}
    if entry.has("pararel_idx"):
        extra["pararel_idx"] = entry.get("pararel_idx")
    for key in ("attribute_prompts", "generation_prompts"):
        if entry.has(key):
            extra[key] = list(entry.texts(key))
    return [
        EditRecord(
            id=entry.identifier("case_id") or str(index),
            subject=subject,
            template=template_from_prompt(rewrite, "prompt", subject),
            target_new=rewrite.child("target_new").text("str"),
            target_true=target_true,
            relation_id=rewrite.identifier("relation_id"),
            paraphrase_prompts=entry.texts("paraphrase_prompts"),
            neighborhood=tuple(
                PromptAnswer(prompt=p, answers=(target_true,), kind="neighborhood") for p in neighborhood if target_true
            ),
            source_format=NAME,
            negated_prompt=negated_prompt(entry, subject),
            extra=extra,
        )
    ]


FORMAT = DatasetFormat(
    name=NAME,
    description="CounterFact / MCF (ROME): requested_rewrite {prompt, subject, target_new, target_true}",
    matches=matches,
    convert=convert,
    protocol="prob",
    kind="counterfact",
)
register_format(FORMAT, first=False)
