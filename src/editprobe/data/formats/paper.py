"""The data files of the negation paper's authors (the repository jugechengzi/FE: MCF, zsRE,
WikiData-Counterfact and MQuAKE, 2000 records each): ``{id, subject, prompt, target_new,
target_true, target_random, paraphrase_prompts, neighborhood_prompts
(+ neighborhood_prompts_answers for zsRE), efficacy_evaluation, cloze, question, answer_a,
answer_b, negetive_prompt}``.

Each record carries its own negated query (``negetive_prompt``, spelt so in those files;
``negated_prompt`` in a user's file of this layout), with the subject filled in, and the
declarative statements of the fact (``efficacy_evaluation``: the old or other object's
statement, then target_new's; MCF and zsRE add the two as questions). zsRE records have
``target_true`` "" (zsRE has no old object) and target_new is zsRE's answer. CounterFact
records (MCF) have no neighbourhood answers: as in CounterFact, their answer is target_true.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import FieldError
from ..fields import RawEntry, negated_prompt, template_from_prompt
from ..records import EditRecord, PromptAnswer
from .base import DatasetFormat, is_question, record_id, register_format

NAME = "paper"
NEGATED_KEYS = ("negetive_prompt", "negated_prompt")
# Kept for the probes that ask the fact in other forms (question, cloze, two choices).
EXTRA_KEYS = ("target_random", "cloze", "question", "answer_a", "answer_b")


def matches(raw: Mapping[str, Any]) -> bool:
    return ("prompt" in raw and "target_new" in raw
            and any(key in raw for key in (*NEGATED_KEYS, "efficacy_evaluation")))


def _neighborhood(entry: RawEntry, target_true: str | None) -> tuple[PromptAnswer, ...]:
    prompts = entry.texts("neighborhood_prompts")
    if not prompts:
        return ()
    if entry.has("neighborhood_prompts_answers"):  # zsRE: an answer per prompt
        answers = entry.texts("neighborhood_prompts_answers", required=True)
        if len(answers) != len(prompts):
            raise FieldError(entry.path("neighborhood_prompts_answers"),
                             f"expected {len(prompts)} answers, one per neighborhood prompt")
        return tuple(PromptAnswer(prompt=p, answers=(a,), kind="nq") for p, a in zip(prompts, answers))
    if target_true is None:
        raise FieldError(entry.path("target_true"), "missing (it is the answer of neighborhood_prompts)")
    return tuple(PromptAnswer(prompt=p, answers=(target_true,), kind="neighborhood") for p in prompts)


def convert(entry: RawEntry, index: int) -> list[EditRecord]:
    subject = entry.text("subject")
    template = template_from_prompt(entry, "prompt", subject)
    target_true = entry.optional_text("target_true")  # "" for zsRE: no old object
    statements = entry.texts("efficacy_evaluation")
    extra: dict[str, Any] = {key: entry.get(key) for key in EXTRA_KEYS if entry.has(key)}
    if statements:
        extra["efficacy_evaluation"] = list(statements)
    return [
        EditRecord(
            id=record_id(entry, index),
            subject=subject,
            template=template,
            target_new=entry.text("target_new"),
            target_true=target_true,
            paraphrase_prompts=entry.texts("paraphrase_prompts"),
            neighborhood=_neighborhood(entry, target_true),
            source_format=NAME,
            is_question=is_question(template),
            negated_prompt=negated_prompt(entry, subject, NEGATED_KEYS),
            statements=statements[:2],  # the declarative ones (the questions follow)
            extra=extra,
        )
    ]


FORMAT = DatasetFormat(
    name=NAME,
    description="the negation paper's data files: prompt, target_new, target_true, negetive_prompt, "
                "efficacy_evaluation, paraphrase/neighborhood prompts",
    matches=matches,
    convert=convert,
    # protocol None: the files hold CounterFact- and zsRE-style records, told apart by their
    # prompts and true objects; kind: "paper"
)
register_format(FORMAT, first=False)
