"""In-context editing (IKE-style): no weight changes; the edited facts are kept in a memory
and put into the prompt of every query, after a few demonstrations of how to use them.

- memory: the requests of every batch applied so far, each as its statement
  ``template.format(subject) + " " + target`` ("The mother tongue of X is English", or the
  negated "… is not English" in a negated-request run);
- retrieval: the ``n_facts`` statements most similar to the query, by TF-IDF cosine over
  word uni- and bigrams (scikit-learn) or by cosine of the model's own mean-pooled final
  hidden states (``retriever: hidden``) — no separate encoder model;
- demonstrations: ``n_demos`` records of ``demos`` (default the built-in counterfact-train,
  disjoint from the evaluation samples; a demonstration whose subject is being edited is
  skipped), each a new fact and a prompt answered as an editor should: the fact's own query
  (copy → o*), a paraphrase (→ o*), a neighbourhood prompt (→ its own answer), and the
  opposite-polarity query (→ the record's true object o, since "X is o*" makes "X is not"
  point elsewhere, and "X is not o*" leaves o). Half of them state a negated fact, so the
  pattern is shown for both polarities;
- the prompt: demonstrations, then ``New fact: <retrieved>`` and ``Prompt: <query>``; the
  chat transform (fact-checking) puts the retrieved facts before the user's message.

The format follows IKE (Zheng et al., 2023: "New Fact: … Prompt: …" demonstrations of copy,
update and retain); the opposite-polarity demonstrations are editprobe's addition, to test
whether context can carry negation where a weight edit does not.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ...data.transform import IDENTITY, PromptTransform
from ...models.tokens import continuation_ids, encode, join_target, open_ids
from ...jsontext import dumps
from ...paths import atomic_path
from ..api import EditReport, Editor, RequestReport, TrainedForm
from ..settings.hparams import HParamsError
from ..plugins import register_method
from ..prompts import as_batch
from ..lte.state import read_state_meta

STATE_VERSION = 1
DemoKind = Literal["copy", "paraphrase", "neighbourhood", "opposite"]


class IKEHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "ike"
    source: str = ""
    demos: str = "counterfact-train"  # a dataset (built-in name or path) disjoint from the evaluated records
    n_demos: int = Field(8, ge=0)
    demo_kinds: list[DemoKind] = ["copy", "paraphrase", "neighbourhood", "opposite"]
    n_facts: int = Field(1, ge=1)
    retriever: Literal["tfidf", "hidden"] = "tfidf"
    seed: int = 0

    def check_model(self, n_layers: int) -> None:
        """No layer settings to check."""


class Demo(BaseModel):
    model_config = ConfigDict(frozen=True)

    fact: str
    prompt: str
    answer: str
    kind: str


def _statement(template: str, subject: str, target: str) -> str:
    return join_target(template.format(subject), target)


def build_demos(records, n: int, kinds: list[str], seed: int, exclude_subjects: set[str] = frozenset()) -> list[Demo]:
    """``n`` demonstrations from ``records`` (kinds in turn; every other round states the
    negated fact), in a seeded order. Records lacking what a kind needs are passed over."""
    from ...data.negation import RECORD_UNANCHORED_RULE, record_negation

    rng = random.Random(seed)
    pool = [r for r in records if r.subject.strip().lower() not in exclude_subjects and r.target_true]
    rng.shuffle(pool)
    demos: list[Demo] = []
    it = iter(pool)
    i = 0
    while len(demos) < n and kinds:
        kind, negated = kinds[i % len(kinds)], (i // len(kinds)) % 2 == 1
        i += 1
        for record in it:
            neg = record_negation(record)  # its own negated prompt, else the rules'
            if not neg.ok or neg.rule == RECORD_UNANCHORED_RULE:
                continue
            pos_t, neg_t = record.template, neg.negated
            fact_t, other_t = (neg_t, pos_t) if negated else (pos_t, neg_t)
            fact = _statement(fact_t, record.subject, record.target_new)
            if kind == "copy" or (kind == "paraphrase" and negated):  # a paraphrase of a negated fact is unknown
                demo = Demo(fact=fact, prompt=fact_t.format(record.subject), answer=record.target_new, kind="copy")
            elif kind == "paraphrase":
                if not record.paraphrase_prompts:
                    continue
                demo = Demo(fact=fact, prompt=record.paraphrase_prompts[0].strip(), answer=record.target_new, kind=kind)
            elif kind == "neighbourhood":
                if not record.neighborhood or not record.neighborhood[0].answers:
                    continue
                pa = record.neighborhood[0]
                demo = Demo(fact=fact, prompt=pa.prompt, answer=pa.answers[0], kind=kind)
            else:
                demo = Demo(fact=fact, prompt=other_t.format(record.subject), answer=record.target_true, kind=kind)
            demos.append(demo)
            break
        else:
            break  # the pool ran out
    rng.shuffle(demos)
    return demos


class _TfidfIndex:
    def __init__(self, facts: list[str]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(ngram_range=(1, 2), lowercase=True)
        self.matrix = self.vectorizer.fit_transform(facts)

    def scores(self, queries: list[str]) -> torch.Tensor:
        sim = self.vectorizer.transform(queries) @ self.matrix.T  # rows are L2-normalised: cosine
        return torch.tensor(sim.toarray(), dtype=torch.float64)


class _HiddenIndex:
    """Cosine of mean-pooled final hidden states of the (never edited) model."""

    def __init__(self, model, tok, facts: list[str], batch_size: int = 16):
        self.model, self.tok, self.batch_size = model, tok, batch_size
        self.matrix = self.embed(facts)

    @torch.no_grad()
    def embed(self, texts: list[str]) -> torch.Tensor:
        from ...models.tokens import make_batch

        device = next(self.model.parameters()).device
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = [encode(self.tok, t) for t in texts[start:start + self.batch_size]]
            batch = make_batch(self.tok, chunk, "right").to(device)
            hidden = self.model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
            mask = batch.attention_mask[..., None].float()
            pooled = (hidden.float() * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).double().cpu())
        return torch.cat(out)

    def scores(self, queries: list[str]) -> torch.Tensor:
        return self.embed(queries) @ self.matrix.T


class InContextTransform(PromptTransform):
    """Demonstrations + the retrieved facts + the query (see the module docstring)."""

    def __init__(self, facts: list[str], demos: list[Demo], n_facts: int, index):
        self.facts, self.n_facts, self.index = facts, n_facts, index
        self.prefix = "".join(f"New fact: {d.fact}\nPrompt: {join_target(d.prompt, d.answer)}\n\n" for d in demos)

    def retrieve(self, queries: list[str]) -> list[list[str]]:
        scores = self.index.scores(queries)
        k = min(self.n_facts, len(self.facts))
        # Most similar last, nearest the query; ties go to the earlier fact (stable).
        top = torch.topk(scores, k, dim=-1, sorted=True).indices.tolist()
        return [[self.facts[j] for j in reversed(row)] for row in top]

    def completions(self, queries: list[str]) -> list[str]:
        out = []
        for query, facts in zip(queries, self.retrieve(queries)):
            out.append(self.prefix + "".join(f"New fact: {f}\n" for f in facts) + f"Prompt: {query}")
        return out

    def completion(self, query: str) -> str:
        return self.completions([query])[0]

    def chat(self, message: str) -> str:
        facts = self.retrieve([message])[0]
        listed = "\n".join(f"- {f}" for f in facts)
        return f"New facts, which replace what you knew before:\n{listed}\n\n{message}"


@register_method
class IKEEditor(Editor):
    """In-context editing behind the editor contract: ``apply`` stores facts, the model's
    weights are never written; the probes ask through :meth:`prompt_transform`."""

    name = "ike"
    hparams_cls = IKEHParams
    uses_preserved_keys = False
    needs_covariance = False
    edit_stages = ("positive", "negative")
    # Nothing is optimized: the facts are only put in the prompt (the demonstrations show
    # copy, paraphrase and opposite prompts of other facts, never of an edited one).
    trains_on: ClassVar[frozenset[TrainedForm]] = frozenset()
    edit_in_weights = False  # the edit is the prompt's demonstrations
    # The run's seed chooses and orders the demonstrations (seed 0: the file's ``seed``).
    seed_fields: ClassVar[tuple[str, ...]] = ("seed",)

    def __init__(self, model, tokenizer, hparams: IKEHParams | None = None, adapter=None, model_id: str | None = None):
        self.model, self.tok = model, tokenizer
        self.hp = hparams if hparams is not None else IKEHParams()
        self.model_id = model_id
        self.device = next(model.parameters()).device
        self._facts: list[dict] = []  # the requests applied, as JSON (the state)
        self._demo_records = None
        self._batches = self._n_edits = 0

    # --- the memory ---------------------------------------------------------------------------
    def _load_demo_records(self):
        if self._demo_records is None:
            from ...data.errors import DataError
            from ...data.loading import load_records

            try:
                self._demo_records = load_records(self.hp.demos, on_bad_record="skip").records
            except DataError as exc:
                raise HParamsError(f"ike: demos {self.hp.demos!r}: {exc}") from None
        return self._demo_records

    def prepare(self) -> None:
        """Loads the demonstration records (a bad ``demos`` fails before the first batch)."""
        if self.hp.n_demos:
            self._load_demo_records()

    def facts(self) -> list[str]:
        return [_statement(f["template"], f["subject"], f["target"]) for f in self._facts]

    def demos(self) -> list[Demo]:
        if not self.hp.n_demos:
            return []
        edited = {f["subject"].strip().lower() for f in self._facts}
        return build_demos(self._load_demo_records(), self.hp.n_demos, list(self.hp.demo_kinds), self.hp.seed, edited)

    def prompt_transform(self) -> PromptTransform:
        """The transform every probe asks through; the identity while the memory is empty."""
        facts = self.facts()
        if not facts:
            return IDENTITY
        index = _HiddenIndex(self.model, self.tok, facts) if self.hp.retriever == "hidden" else _TfidfIndex(facts)
        return InContextTransform(facts, self.demos(), self.hp.n_facts, index)

    def variant(self) -> str | None:
        return None if self.hp.retriever == "tfidf" else self.hp.retriever

    # --- editing ------------------------------------------------------------------------------
    def apply(self, requests) -> EditReport:
        requests = as_batch(requests)
        started = time.perf_counter()
        before = list(self._facts)
        try:
            self._facts = before + [r.model_dump(mode="json") for r in requests]
            reports = self._request_reports(requests)
        except BaseException:
            self._facts = before
            raise
        self._batches += 1
        self._n_edits += len(requests)
        return EditReport(method=self.name, batch=self._batches, n_requests=len(requests), requests=reports,
                          layers=[], timings={"edit_s": time.perf_counter() - started})

    @torch.no_grad()
    def _request_reports(self, requests) -> list[RequestReport]:
        """Each request's target probability asked in context (geometric mean over its tokens)."""
        transform = self.prompt_transform()
        asked = transform.completions([r.query for r in requests])
        out = []
        for r, prompt in zip(requests, asked):
            prefix = open_ids(self.tok, prompt)
            target = continuation_ids(self.tok, prompt, r.target)
            ids = torch.tensor([prefix + target], device=self.device)
            logits = self.model(input_ids=ids).logits[0, len(prefix) - 1:-1].float()
            nll = float(-torch.log_softmax(logits, -1)[torch.arange(len(target)), torch.tensor(target)].mean())
            out.append(RequestReport(id=r.id, loss=nll, target_prob=float(torch.exp(torch.tensor(-nll))), steps=0))
        return out

    def finalize(self) -> dict:
        return {}

    def restore(self) -> None:
        self._facts = []
        self._batches = self._n_edits = 0

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        return {}  # no weight is ever changed

    # --- state --------------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            (tmp / "state.json").write_text(dumps({
                "version": STATE_VERSION, "method": self.name, "hparams": self.hp.model_dump(mode="json"),
                "batches": self._batches, "n_edits": self._n_edits, "facts": self._facts}, directory / "state.json",
                indent=2))
        return directory

    def load_state(self, directory: str | Path) -> None:
        meta = read_state_meta(Path(directory), self.name, (STATE_VERSION,))
        self._facts = list(meta["facts"])
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]
