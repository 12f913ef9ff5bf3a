"""The classic ROME/MEMIT metrics, each with its protocol label.

- Paraphrase efficacy: exact match of o* after each paraphrase prompt of the record.
- Neighborhood specificity: after each neighborhood prompt (other subjects, same
  relation), does the edited model still produce what the *unedited* model produced? The
  reference is the unedited model's own greedy continuation, len(dataset answer) tokens
  long, so a fact the unedited model never knew cannot count against the edit.

Both are averaged over a record's prompts first, then over records ([choice], as in the
MEMIT evaluation), so records with many prompts do not dominate. Records with no prompts
do not enter the mean (their count is reported).
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, computed_field

from ..data.records import EditRecord
from ..models.tokens import continuation_ids
from .exact import exact_match_ids, match_and_decode
from .generation import decode_text, query_ids
from .scoring import greedy_continuations
from .registry import NEIGHBORHOOD, PARAPHRASE, ProbeDefinition
from .results import ProbeSample, one_decimal

DEFAULT_REFERENCE_TOKENS = 3  # a neighborhood prompt without a dataset answer


class ClassicResult(BaseModel):
    """A per-record-averaged exact-match rate (%, one decimal) and its samples."""

    model_config = ConfigDict(frozen=True)

    probe: str
    probe_version: int
    label: str
    n_records: int  # records with at least one prompt
    n_without_prompts: int
    n_prompts: int
    exact: float | None  # unrounded
    samples: tuple[ProbeSample, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def value(self) -> float | None:
        return one_decimal(self.exact)


def _per_record_mean(probe: ProbeDefinition, samples: list[ProbeSample], n_total: int) -> ClassicResult:
    by_record: dict[str, list[bool]] = {}
    for s in samples:
        by_record.setdefault(s.record_id, []).append(s.match)
    rates = [sum(m) / len(m) for m in by_record.values()]
    return ClassicResult(
        probe=probe.name, probe_version=probe.version, label=probe.label, n_records=len(rates),
        n_without_prompts=n_total - len(rates), n_prompts=len(samples),
        exact=100.0 * sum(rates) / len(rates) if rates else None, samples=tuple(samples),
    )


def paraphrase_efficacy(
    model, tok, records: Sequence[EditRecord], decode_extra: int | None = None, batch_size: int = 32
) -> ClassicResult:
    """Exact match of o* after every paraphrase prompt of every record."""
    rows = [(r.id, p, r.target_new) for r in records for p in r.paraphrase_prompts]
    pairs = [(p, t) for _, p, t in rows]
    matches, decoded = match_and_decode(model, tok, pairs, decode_extra)
    samples = [
        ProbeSample(record_id=rid, setting="paraphrase", probe=PARAPHRASE.name, query=p, expected=t, match=m,
                    generated=decoded[i].text if decoded else None,
                    decode_match=decoded[i].match if decoded else None)
        for i, ((rid, p, t), m) in enumerate(zip(rows, matches))
    ]
    return _per_record_mean(PARAPHRASE, samples, len(records))


class NeighborhoodPrompt(BaseModel):
    """A neighborhood prompt with the unedited model's greedy continuation (ids and text)."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    prompt: str
    dataset_answer: str | None
    reference_ids: tuple[int, ...]
    reference_text: str


class NeighborhoodReference(BaseModel):
    """What the unedited model said after every neighborhood prompt; take it before editing."""

    model_config = ConfigDict(frozen=True)

    n_records: int
    prompts: tuple[NeighborhoodPrompt, ...]


def neighborhood_reference(
    model, tok, records: Sequence[EditRecord], batch_size: int = 16
) -> NeighborhoodReference:
    """Greedy continuations of the unedited model, each as long (in tokens) as the
    dataset's answer after that prompt (``DEFAULT_REFERENCE_TOKENS`` without one)."""
    rows = []
    for r in records:
        for pa in r.neighborhood:
            answer = pa.answers[0] if pa.answers else None
            n = len(continuation_ids(tok, pa.prompt, answer)) if answer else DEFAULT_REFERENCE_TOKENS
            rows.append((r.id, pa.prompt, answer, n))
    # EOS is kept as a token like any other: "still produces the same tokens" includes
    # ending the text at the same point.
    gen = greedy_continuations(model, tok, [query_ids(tok, p) for _, p, _, _ in rows], [n for *_, n in rows])
    out = [NeighborhoodPrompt(record_id=rid, prompt=p, dataset_answer=a, reference_ids=tuple(ids),
                              reference_text=decode_text(tok, ids))
           for (rid, p, a, _), ids in zip(rows, gen)]
    return NeighborhoodReference(n_records=len(records), prompts=tuple(out))


def neighborhood_specificity(
    model, tok, reference: NeighborhoodReference, batch_size: int = 32
) -> ClassicResult:
    """% of neighborhood prompts (per record, then over records) after which ``model``
    still produces the unedited model's continuation (teacher-forced exact match on ids)."""
    prompts = reference.prompts
    matches = exact_match_ids(model, tok, [(query_ids(tok, p.prompt), p.reference_ids) for p in prompts], batch_size) \
        if prompts else []
    samples = [
        ProbeSample(record_id=p.record_id, setting="neighborhood", probe=NEIGHBORHOOD.name, query=p.prompt,
                    expected=p.reference_text, match=m)
        for p, m in zip(prompts, matches)
    ]
    return _per_record_mean(NEIGHBORHOOD, samples, reference.n_records)
