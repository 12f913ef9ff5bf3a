"""EasyEdit's flat format: ``{prompt, subject, target_new, ground_truth, rephrase_prompt,
locality_prompt, locality_ground_truth}`` (e.g. ``counterfact-edit.json``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FieldError
from ..fields import RawEntry, flatten_answers, negated_prompt, template_from_prompt
from ..records import EditRecord, PromptAnswer
from .base import DatasetFormat, is_question, record_id, register_format

NAME = "easyedit"


def matches(raw: Mapping[str, Any]) -> bool:
    return "prompt" in raw and "target_new" in raw and "subject" in raw


def _locality(entry: RawEntry) -> tuple[PromptAnswer, ...]:
    prompts = entry.texts("locality_prompt")
    if not prompts:
        return ()
    if not entry.has("locality_ground_truth"):
        raise FieldError(entry.path("locality_ground_truth"), "missing (required with 'locality_prompt')")
    answers = entry.answers("locality_ground_truth", required=True)
    if len(prompts) == 1:
        return (PromptAnswer(prompt=prompts[0], answers=answers, kind="locality"),)
    # Several prompts: EasyEdit pairs the i-th prompt with the i-th ground truth.
    raw = entry.get("locality_ground_truth")
    if not isinstance(raw, list) or len(raw) != len(prompts):
        raise FieldError(entry.path("locality_ground_truth"), f"expected {len(prompts)} answers, one per locality_prompt")
    out = []
    for i, (prompt, answer) in enumerate(zip(prompts, raw)):
        where = f"{entry.path('locality_ground_truth')}[{i}]"
        answers = flatten_answers(answer, where)
        if not answers:
            raise FieldError(where, "must not be empty")
        out.append(PromptAnswer(prompt=prompt, answers=answers, kind="locality"))
    return tuple(out)


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    subject = entry.text("subject")
    template = template_from_prompt(entry, "prompt", subject)
    truths = entry.answers("ground_truth")
    return [
        EditRecord(
            id=record_id(entry, index),
            subject=subject,
            template=template,
            target_new=entry.text("target_new"),
            target_true=truths[0] if truths else None,
            paraphrase_prompts=entry.texts("rephrase_prompt"),
            neighborhood=_locality(entry),
            source_format=NAME,
            negated_prompt=negated_prompt(entry, subject),
            is_question=is_question(template),
            extra={"ground_truth": list(truths)} if len(truths) > 1 else {},
        )
    ]


FORMAT = DatasetFormat(
    name=NAME,
    description="EasyEdit flat: prompt, subject, target_new, ground_truth, rephrase_prompt, locality_prompt",
    matches=matches,
    convert=convert,
    protocol="tokens",
    kind="counterfact",  # its question records (zsRE) are kind zsre
    has_locality=True,
)
register_format(FORMAT, first=False)
