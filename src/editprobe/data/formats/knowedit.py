"""KnowEdit (zsRE test, WikiData-Counterfact): ``{subject, prompt, target_new,
ground_truth, rephrase_prompt | rephrase, locality: {kind: [...]}, portability: {kind: [...]}}``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..fields import RawEntry, negated_prompt, prompt_answers, template_from_prompt
from ..records import EditRecord
from .base import DatasetFormat, is_question, record_id, register_format

NAME = "knowedit"


def matches(raw: Mapping[str, Any]) -> bool:
    if "prompt" not in raw or "target_new" not in raw:
        return False
    return isinstance(raw.get("locality"), dict) or isinstance(raw.get("portability"), dict) or "rephrase" in raw


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    subject = entry.text("subject")
    template = template_from_prompt(entry, "prompt", subject)
    # An empty ground truth (one WCF train record) means "no old target", not a bad record.
    truths = entry.answers("ground_truth")
    extra: dict[str, Any] = {}
    if len(truths) > 1:
        extra["ground_truth"] = list(truths)
    if entry.has("cond"):
        extra["cond"] = entry.get("cond")
    return [
        EditRecord(
            id=record_id(entry, index),
            subject=subject,
            template=template,
            target_new=entry.text("target_new"),
            target_true=truths[0] if truths else None,
            paraphrase_prompts=entry.texts("rephrase_prompt") + entry.texts("rephrase"),
            neighborhood=prompt_answers(entry, "locality"),
            portability=prompt_answers(entry, "portability"),
            source_format=NAME,
            negated_prompt=negated_prompt(entry, subject),
            is_question=is_question(template),
            extra=extra,
        )
    ]


FORMAT = DatasetFormat(
    name=NAME,
    description="KnowEdit (zsRE test, WCF): prompt, target_new, ground_truth, locality/portability by kind",
    matches=matches,
    convert=convert,
    protocol="tokens",
    kind="wcf",  # WikiData-Counterfact; its zsRE (question records) is kind zsre
    has_locality=True,
)
register_format(FORMAT, first=False)
