"""Fact-checking queries (docs/protocol.md#fact-checking).

The model is asked, through its chat template (with the template's default system
prompt), whether the edited statement is true. An editor that learned a shortcut from the
subject to the target string makes the model *say* o* after the query, yet its judgment of
the statement "query o*" stays unchanged: accuracy far below efficacy (Eff) is the finding.

Flow: before editing, ``ask_records(unedited, tok, records, "new")`` (needed for the
inclusion rule) and ``no_edit_fact_check(unedited, tok, records)`` (the "No edit" row);
after editing, ``ask_records(edited, ..., "new")`` and, for the balanced control,
``ask_records(edited, ..., "old")``; then ``fact_check_result(before, after, eff, control)``.
"""

from __future__ import annotations

import string
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field, field_validator

from ..data.placeholders import known_fields
from ..data.records import EditRecord
from ..data.transform import IDENTITY, PromptTransform
from ..models.tokens import chat_prompt, has_chat_template
from .generation import decode_text, prompt_ids
from .registry import FACTCHECK_ACCURACY, FACTCHECK_CONTROL, FACTCHECK_NO_EDIT
from .results import Score, one_decimal, percent
from .scoring import score_and_decode

FactAnswer = Literal["true", "false", "other"]
TargetKind = Literal["new", "old"]


class FactCheckConfig(BaseModel):
    """The wording and decoding of the fact-check probe; every default is the protocol's
    (marked [choice] where the paper is silent). Changing any of them changes the numbers:
    bump nothing here, but report the config beside the results (they carry it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    statement_template: str = "{query} {target}"  # statement = query + " " + o*
    # [choice] question datasets (zsRE): a fixed declarative wrapper around the question.
    question_statement_template: str = 'The answer to the question "{question}" is {target}.'
    instruction: str = "Judge whether the following statement is true or false: {statement}"
    suffix: str = " Answer with True or False only."  # [choice] appended to the instruction
    system: str | None = None  # None: the chat template's own default system prompt
    max_new_tokens: int = 4  # [choice] "a few tokens": enough for "True." / "**False**"
    batch_size: int = 16

    @field_validator("statement_template")
    @classmethod
    def _statement_fields(cls, v: str) -> str:
        return _require(v, ("query", "target"))

    @field_validator("question_statement_template")
    @classmethod
    def _question_fields(cls, v: str) -> str:
        return _require(v, ("question", "target"))

    @field_validator("instruction")
    @classmethod
    def _instruction_fields(cls, v: str) -> str:
        return _require(v, ("statement",))

    @field_validator("max_new_tokens", "batch_size")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError("must be >= 1")
        return v


def _require(template: str, fields: tuple[str, ...]) -> str:
    """Exactly these placeholders (each at least once): a typo such as ``{querry}`` or a stray
    ``{}`` fails when the config is read, not when the first statement is formatted."""
    return known_fields(template, allowed=fields, required=fields)


DEFAULT_CONFIG = FactCheckConfig()
# Curly quotes and similar marks a chat model may wrap its answer in.
_STRIP = string.punctuation + "“”‘’«»…"


def parse_answer(text: str) -> FactAnswer:
    """The first word, punctuation stripped, case-insensitive: "true", "false" or "other"."""
    words = text.split()
    word = words[0].strip(_STRIP).lower() if words else ""
    return word if word in ("true", "false") else "other"  # type: ignore[return-value]


def make_statement(record: EditRecord, target: str, config: FactCheckConfig = DEFAULT_CONFIG) -> str:
    """The statement built from the record's query and ``target`` (the configured wording)."""
    if record.is_question:
        return config.question_statement_template.format(question=record.query, target=target)
    return config.statement_template.format(query=record.query, target=target)


def user_message(statement: str, config: FactCheckConfig = DEFAULT_CONFIG) -> str:
    return config.instruction.format(statement=statement) + config.suffix


def fact_check_prompt(tok, statement: str, config: FactCheckConfig = DEFAULT_CONFIG,
                      transform: PromptTransform = IDENTITY) -> str:
    """The full prompt text; a tokenizer without a chat template gets the bare message. An
    in-context editor's ``transform`` rewrites the user message (its facts go there)."""
    message = user_message(statement, config)
    if not has_chat_template(tok):
        return transform.completion(message)
    return chat_prompt(tok, transform.chat(message), config.system)


def statement_for(record: EditRecord, target: TargetKind, config: FactCheckConfig = DEFAULT_CONFIG
                  ) -> tuple[str, str] | None:
    """(statement, source) about the record with its new object (``"new"``) or the other one
    (``"old"``: the old object; for zsRE read toward answers[0], which has none, the ``alt``
    answer, as the paper's false statement); None when the record has no such object. A
    record that carries declarative statements (the paper's files) is asked those
    (source "record"); otherwise they are built from its query (source "template")."""
    obj = record.target_new if target == "new" else (record.target_true or record.extra.get("alt"))
    if not obj or not str(obj).strip():
        return None
    if len(record.statements) >= 2:
        return record.statements[1 if target == "new" else 0], "record"
    return make_statement(record, obj, config), "template"


class FactCheckReply(BaseModel):
    """One statement put to one model."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    target: TargetKind
    statement: str
    generated: str
    answer: FactAnswer
    chat_template: bool = True  # False: the tokenizer had none, the bare message was used
    statement_source: str = "template"  # "record": the record's own statement (statement_for)


def ask_statements(
    model, tok, statements: Sequence[str], config: FactCheckConfig = DEFAULT_CONFIG,
    transform: PromptTransform = IDENTITY,
) -> list[tuple[str, FactAnswer]]:
    """(generated text, parsed answer) per statement; batched with left padding."""
    chat = has_chat_template(tok)
    prompts = [prompt_ids(tok, fact_check_prompt(tok, s, config, transform), rendered_chat=chat) for s in statements]
    # Decoded from each prompt's cache, the chat template's shared system turn and
    # instruction run once (``config.batch_size`` is kept; batches are cut by a token budget).
    generated = score_and_decode(model, tok, prompts, [[] for _ in prompts], [config.max_new_tokens] * len(prompts),
                                 stop_at_eos=True)[1] or []
    texts = [decode_text(tok, ids) for ids in generated]
    return [(t, parse_answer(t)) for t in texts]


def ask_records(
    model, tok, records: Sequence[EditRecord], target: TargetKind, config: FactCheckConfig = DEFAULT_CONFIG,
    transform: PromptTransform = IDENTITY,
) -> list[FactCheckReply]:
    """Ask about each record's statement with the new object o* (``target="new"``) or the
    other object (``"old"``: :func:`statement_for`; records without one are skipped)."""
    if target not in ("new", "old"):
        raise ValueError(f"target must be 'new' or 'old', not {target!r}")
    chosen = [(r, found) for r in records if (found := statement_for(r, target, config)) is not None]
    answers = ask_statements(model, tok, [statement for _, (statement, _) in chosen], config, transform)
    return [
        FactCheckReply(record_id=r.id, target=target, statement=statement, generated=g, answer=a,
                       chat_template=has_chat_template(tok), statement_source=source)
        for (r, (statement, source)), (g, a) in zip(chosen, answers)
    ]


class FactCheckSample(BaseModel):
    """One record: the new-object statement before and after the edit, the control."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    statement: str
    before: FactAnswer
    after: FactAnswer
    included: bool
    before_text: str
    after_text: str
    control_statement: str | None = None
    control: FactAnswer | None = None  # the edited model on the old-object statement
    control_text: str | None = None


class FactCheckResult(BaseModel):
    """Accuracy with its inclusion rule, Eff beside it, and the balanced control."""

    model_config = ConfigDict(frozen=True)

    accuracy_score: Score  # 'true' after the edit, over the included records
    control_score: Score | None  # 'true' to the old-object statement after the edit, included records
    eff: float | None  # PP efficacy of the same edited model, passed in
    n_records: int
    before_counts: dict[str, int]
    after_counts: dict[str, int]
    chat_template: bool
    config: FactCheckConfig
    samples: tuple[FactCheckSample, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_included(self) -> int:
        return self.accuracy_score.n

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accuracy(self) -> float | None:
        return self.accuracy_score.value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def control(self) -> float | None:
        return self.control_score.value if self.control_score is not None else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def balanced_accuracy(self) -> float | None:
        """[choice] Mean of 'true' to o* and 'false' to o after the edit, over the included
        records that have an old object: 50 for a model that says 'true' to everything."""
        rows = [s for s in self.samples if s.included and s.control is not None]
        hits = sum(s.after == "true" for s in rows) + sum(s.control == "false" for s in rows)
        return one_decimal(percent(hits, 2 * len(rows)))

    def row(self) -> dict[str, float | int | None]:
        return {"Eff": self.eff, "Acc": self.accuracy, "n": self.n_included, "Control": self.control,
                "Balanced": self.balanced_accuracy}


def is_included(before: FactAnswer, after: FactAnswer) -> bool:
    """Included: the unedited model answered true/false, and not 'true' both before and after."""
    return before in ("true", "false") and not (before == "true" and after == "true")


def _by_id(replies: Sequence[FactCheckReply], what: str) -> dict[str, FactCheckReply]:
    out: dict[str, FactCheckReply] = {}
    for r in replies:
        if r.record_id in out:
            raise ValueError(f"{what}: record {r.record_id!r} appears twice")
        out[r.record_id] = r
    return out


def fact_check_result(
    before: Sequence[FactCheckReply],
    after: Sequence[FactCheckReply],
    eff: float | None = None,
    control: Sequence[FactCheckReply] | None = None,
    config: FactCheckConfig = DEFAULT_CONFIG,
) -> FactCheckResult:
    """Combine the unedited (``before``) and edited (``after``) replies about the
    new-object statements, and optionally the edited model's replies about the old-object
    statements (``control``)."""
    if any(r.target != "new" for r in (*before, *after)):
        raise ValueError("before and after must be replies about the new-object statements (target='new')")
    if control is not None and any(r.target != "old" for r in control):
        raise ValueError("control must hold replies about the old-object statements (target='old')")
    b, a = _by_id(before, "before"), _by_id(after, "after")
    if set(b) != set(a):
        raise ValueError("before and after must cover the same records")
    c = _by_id(control, "control") if control is not None else {}
    samples = []
    for rid, rb in b.items():
        ra, rc = a[rid], c.get(rid)
        samples.append(FactCheckSample(
            record_id=rid, statement=rb.statement, before=rb.answer, after=ra.answer,
            included=is_included(rb.answer, ra.answer), before_text=rb.generated, after_text=ra.generated,
            control_statement=rc.statement if rc else None, control=rc.answer if rc else None,
            control_text=rc.generated if rc else None,
        ))
    included = [s for s in samples if s.included]
    control_score = None
    if control is not None:
        control_score = Score.of(FACTCHECK_CONTROL, (s.control == "true" for s in included if s.control is not None))
    return FactCheckResult(
        accuracy_score=Score.of(FACTCHECK_ACCURACY, (s.after == "true" for s in included)),
        control_score=control_score,
        eff=eff,
        n_records=len(samples),
        before_counts=dict(Counter(s.before for s in samples)),
        after_counts=dict(Counter(s.after for s in samples)),
        chat_template=all(r.chat_template for r in (*before, *after)),
        config=config,
        samples=tuple(samples),
    )


class FactCheckNoEdit(BaseModel):
    """The "No edit" row: the unedited model on the old-object statements."""

    model_config = ConfigDict(frozen=True)

    score: Score  # % answered 'true', over records with an old object
    counts: dict[str, int]
    n_skipped: int  # records without an old object
    chat_template: bool
    config: FactCheckConfig
    replies: tuple[FactCheckReply, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accuracy(self) -> float | None:
        return self.score.value


def no_edit_fact_check(
    model, tok, records: Sequence[EditRecord], config: FactCheckConfig = DEFAULT_CONFIG
) -> FactCheckNoEdit:
    """Accuracy of the unedited model on the true (old-object) statements."""
    replies = ask_records(model, tok, records, "old", config)
    return FactCheckNoEdit(
        score=Score.of(FACTCHECK_NO_EDIT, (r.answer == "true" for r in replies)),
        counts=dict(Counter(r.answer for r in replies)),
        n_skipped=len(records) - len(replies),
        chat_template=has_chat_template(tok),
        config=config,
        replies=tuple(replies),
    )
