"""Token-exact prompt rows for keys and target optimization.

Each row is built from token ids (never re-tokenized after padding), with the subject's
last token located through offsets and the target window computed from the row itself,
so BOS, prefixes and either padding side are all handled the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from pydantic import ValidationError

from ..data.records import EditRequest
from ..models.tokens import (
    Batch,
    TokenizationError,
    char_span_of_subject,
    continuation_ids,
    encode,
    make_batch,
    subject_last_index,
)
from ..errors import UserError


class RequestError(UserError, ValueError):
    """A request that cannot be edited, named by its id."""


@dataclass
class Row:
    request: int  # index of the request in the batch
    ids: list[int]
    # The edited token, in the unpadded row: where keys are read and the free vector added.
    # The subject's last token, or the query's last token with ``locate="last-token"``.
    subject_index: int
    target_positions: list[int] = field(default_factory=list)  # positions whose next token is a label
    target_labels: list[int] = field(default_factory=list)
    kind: str = "rewrite"  # "rewrite" | "kl" | "key" | "opposite" (negation-aware rows)
    template: int = 0  # which context template


@dataclass
class RowBatch:
    rows: list[Row]
    batch: Batch

    def subject_positions(self) -> torch.Tensor:
        return torch.tensor([self.batch.position(i, r.subject_index) for i, r in enumerate(self.rows)])

    def request_index(self) -> torch.Tensor:
        return torch.tensor([r.request for r in self.rows])

    def select(self, keep: list[int]) -> "RowBatch":
        rows = [self.rows[i] for i in keep]
        b = self.batch
        idx = torch.tensor(keep, dtype=torch.long)
        sub = Batch(b.input_ids[idx], b.attention_mask[idx], [b.lengths[i] for i in keep], b.padding_side)
        return RowBatch(rows, sub)


def validate_request(req: EditRequest) -> None:
    """What :func:`as_request` checks of an EditRequest (one built with ``model_construct``
    skips pydantic): a subject and a target, one ``{}``, a subject that can be located."""
    if not isinstance(req.subject, str) or not req.subject.strip():
        raise RequestError(f"request {req.id}: empty subject")
    if not isinstance(req.target, str) or not req.target.strip():
        raise RequestError(f"request {req.id}: empty target")
    if not isinstance(req.template, str) or req.template.count("{}") != 1:
        raise RequestError(f"request {req.id}: template {req.template!r} must contain exactly one '{{}}'")
    try:
        char_span_of_subject(req.template, req.subject)
    except TokenizationError as exc:
        raise RequestError(f"request {req.id}: {exc}") from None


def as_request(item, index: int = 0) -> EditRequest:
    """An EditRequest from an EditRequest or a dict, with errors that name the request: the
    one place a request is checked (editors call it on every request of a batch; the rows
    built from it below trust it).

    A dict whose template has no ``{}`` gets the subject replaced by ``{}`` (docs/engine.md,
    Subject location); a subject that does not occur in it is an error."""
    if isinstance(item, EditRequest):
        validate_request(item)
        return item
    if not isinstance(item, dict):
        raise RequestError(f"request #{index}: expected an EditRequest or a dict, got {type(item).__name__}")
    name = item.get("id", f"#{index}")
    data = dict(item)
    template, subject = data.get("template"), data.get("subject")
    if isinstance(template, str) and isinstance(subject, str) and "{}" not in template:
        if not subject.strip() or subject not in template:
            raise RequestError(f"request {name}: subject {subject!r} not in its prompt {template!r}")
        data["template"] = template.replace(subject, "{}")
    try:
        req = EditRequest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"]) or "request"
        raise RequestError(f"request {name}: {field}: {first['msg']}") from None
    validate_request(req)
    return req


LOCATES = ("subject", "last-token")


def as_batch(requests) -> list[EditRequest]:
    """A batch an editor's ``apply`` was given, as checked EditRequests: a list (or other
    iterable) of requests or dicts, not one request, and not empty."""
    if isinstance(requests, (EditRequest, dict, str)):
        raise RequestError("apply takes a list of requests, not a single one")
    batch = [as_request(r, i) for i, r in enumerate(requests)]
    if not batch:
        raise RequestError("empty batch of requests")
    return batch


def edit_index(subject_index: int, n_query_tokens: int, locate: str = "subject") -> int:
    """The one place the edited token is chosen: the subject's last token, or with
    ``last-token`` the query's last token (the one before the target). Causal attention
    makes the subject's last token identical for "X is" and "X is not"; the last token
    sees the whole query, negation included."""
    if locate == "subject":
        return subject_index
    if locate == "last-token":
        return n_query_tokens - 1
    raise ValueError(f"locate must be one of {', '.join(LOCATES)}, not {locate!r}")


def _subject_row(tok, prefix: str, template: str, subject: str, request: int, req_id: str,
                 locate: str = "subject") -> tuple[str, list[int], int]:
    text = prefix + template.format(subject)
    try:
        # From the parsed template: an escaped brace ("{{") is one character in the text.
        subject_end = len(prefix) + char_span_of_subject(template, subject)[1]
        idx = subject_last_index(tok, text, subject_end)
    except TokenizationError as exc:
        raise RequestError(f"request {req_id}: {exc}") from None
    ids = encode(tok, text)
    return text, ids, edit_index(idx, len(ids), locate)


def target_row(tok, req: EditRequest, r: int, prefix: str, template: str, t: int, kind: str = "rewrite",
               locate: str = "subject") -> Row:
    """One query teacher-forced on all target tokens but the last (label y_t is predicted at
    the position of the token just before it)."""
    text, q_ids, idx = _subject_row(tok, prefix, template, req.subject, r, req.id, locate)
    try:
        target = continuation_ids(tok, text, req.target)
    except TokenizationError as exc:
        raise RequestError(f"request {req.id}: {exc}") from None
    positions = list(range(len(q_ids) - 1, len(q_ids) - 1 + len(target)))
    return Row(r, q_ids + target[:-1], idx, positions, list(target), kind, t)


def rewrite_rows(tok, requests: list[EditRequest], templates: list[str], kl_prompt: str | None = "{} is a",
                 locate: str = "subject") -> list[Row]:
    """Rows for target optimization: every template-prefixed query teacher-forced on all target
    tokens but the last, plus one KL ("essence") row per request."""
    rows: list[Row] = []
    for r, req in enumerate(requests):
        for t, ctx in enumerate(templates):
            rows.append(target_row(tok, req, r, ctx[: ctx.index("{}")], req.template, t, "rewrite", locate))
        if kl_prompt is not None:
            _, ids, idx = _subject_row(tok, "", kl_prompt, req.subject, r, req.id, locate)
            rows.append(Row(r, ids, idx, kind="kl"))
    return rows


def key_rows(tok, requests: list[EditRequest], templates: list[str], locate: str = "subject") -> list[Row]:
    """Rows for keys: every template-prefixed query, no target."""
    rows = []
    for r, req in enumerate(requests):
        for t, ctx in enumerate(templates):
            prefix = ctx[: ctx.index("{}")]
            _, ids, idx = _subject_row(tok, prefix, req.template, req.subject, r, req.id, locate)
            rows.append(Row(r, ids, idx, kind="key", template=t))
    return rows


def batch_rows(tok, rows: list[Row], padding_side: str = "right") -> RowBatch:
    return RowBatch(rows, make_batch(tok, [r.ids for r in rows], padding_side))


def chunks(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i : i + size]
