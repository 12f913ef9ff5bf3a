"""One record type for every dataset, and the request an editor is given."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class PromptAnswer(BaseModel):
    """A probe prompt with its expected answer(s) (neighborhood, portability, multi-hop)."""

    model_config = ConfigDict(frozen=True)

    prompt: str
    answers: tuple[str, ...]
    kind: str | None = None  # e.g. "Relation_Specificity", "multi_hop", "Subject_Aliasing"

    @property
    def answer(self) -> str:
        return self.answers[0]


class EditRecord(BaseModel):
    """A fact to edit: ``template.format(subject) + " " + target_new``.

    ``template`` holds exactly one ``{}`` where the subject goes. ``target_true`` is the
    fact the unedited model is expected to know, when the dataset has one.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    subject: str
    template: str
    target_new: str
    target_true: str | None = None
    relation_id: str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood: tuple[PromptAnswer, ...] = ()
    portability: tuple[PromptAnswer, ...] = ()
    case_id: str | None = None  # links the edits of one multi-edit case (MQuAKE)
    source_format: str = "unknown"
    is_question: bool = False  # zsRE-style question prompts (fact-checking rewrites them)
    # The record's own negated query, subject filled in (the paper authors' files carry one
    # per record): when present it is the negated query and edit, instead of the rules'.
    negated_prompt: str | None = None
    # Declarative statements of the fact for fact-checking, when the file has them (the
    # paper's files: the old or other object's statement first, then target_new's).
    statements: tuple[str, ...] = ()
    extra: dict = Field(default_factory=dict)

    @field_validator("subject", "target_new")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _one_placeholder(self) -> "EditRecord":
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}', got {self.template!r}")
        return self

    @property
    def query(self) -> str:
        return self.template.format(self.subject)

    def request(self, target: str | None = None, template: str | None = None,
                opposite_template: str | None = None) -> "EditRequest":
        return EditRequest(
            id=self.id, subject=self.subject, template=template or self.template, target=target or self.target_new,
            opposite_template=opposite_template, target_true=self.target_true,
        )


class EditRequest(BaseModel):
    """What an editor is given: (template with one ``{}``, subject, target)."""

    model_config = ConfigDict(frozen=True)

    id: str
    subject: str
    template: str
    target: str
    # The same query with the opposite polarity ("{} is not" for "{} is", and back), when the
    # caller knows it: negation-aware editors keep that query from giving the target.
    opposite_template: str | None = None
    # The fact the unedited model is expected to know (the record's target_true), if any.
    target_true: str | None = None

    @field_validator("subject", "target")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v or not v.strip():
            raise ValueError("must not be empty")
        return v

    @model_validator(mode="after")
    def _one_placeholder(self) -> "EditRequest":
        if self.template.count("{}") != 1:
            raise ValueError(f"template must contain exactly one '{{}}', got {self.template!r}")
        if self.opposite_template is not None and self.opposite_template.count("{}") != 1:
            raise ValueError(f"opposite_template must contain exactly one '{{}}', got {self.opposite_template!r}")
        return self

    @property
    def query(self) -> str:
        return self.template.format(self.subject)
