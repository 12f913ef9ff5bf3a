"""The per-record token cap (``max_prompt_tokens``), checked before the model loads.

A record whose prompt does not fit the model's context is either scored silently on a
truncated or extrapolated position range, or runs for minutes and dies out of memory (one
record with a 10k-token subject: 375 s, 13.7 GB, exit 1). So every text a run feeds the
model for a record — the prompt with its subject and target, each paraphrase and
neighbourhood prompt with its answer, the negated prompt, the fact-check question in its
chat template — is counted with the model's tokenizer alone, read from the same files the
model will be loaded from, and compared with the cap (default: the context length in the
model's ``config.json``). Each text is tokenized once, in batches.

Over the cap, a record is an error naming the file, the record, the query form and both
numbers; with ``on_bad_record="skip"`` it is left out (with its whole entry: an MQuAKE case
is never split) and counted in one warning line per file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.errors import DataError
from ..data.records import EditRecord

# config.json keys that hold the context length, in the order transformers' models use them.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
CHUNK = 256  # records tokenized per batch while filling n records in skip mode

NegatedFn = Callable[[str, "str | None"], "str | None"]  # (template, relation id) -> negated template


@dataclass(frozen=True)
class Overlong:
    """A record over the cap: ``form`` names the query (e.g. ``prompt``, ``paraphrase_prompts[2]``)."""

    position: int | None  # the entry in the file (None: unknown)
    record: EditRecord
    form: str
    n_tokens: int


def context_length(config: dict[str, Any]) -> int | None:
    """The context length a model config states (a multimodal model's text config too)."""
    for source in (config, config.get("text_config") or {}):
        for key in CONTEXT_KEYS:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def model_files(model: str) -> tuple[str | None, str]:
    """Where the model's tokenizer and config.json can be read without loading the model
    (a directory, or a hub id that is in the local cache), or None and why not."""
    from ..models.builtin import builtin_cache_path, is_cached
    from ..models.reference import resolve_model_reference

    ref = resolve_model_reference(model, network=False)
    if ref.kind == "builtin":
        if is_cached(model):
            return str(builtin_cache_path(model)), ""
        return None, f"the built-in model {model} is not cached yet (editprobe models pull {model})"
    if ref.kind == "local":
        return str(Path(model).expanduser()), ""
    if ref.offline:  # a hub id whose config.json is in the local Hugging Face cache
        return model, ""
    return None, f"{model} is not in the local Hugging Face cache yet"


class PromptLengths:
    """The cap for one model, checked over datasets' records: ``setup()`` once (the
    tokenizer, no model; returns the warning lines), then ``select``/``check``."""

    def __init__(self, model: str, max_tokens: int | None = None, loaded=None, factcheck=None,
                 negated: NegatedFn | None = None, probe_prompts: bool = True,
                 option: str | None = "--max-prompt-tokens", can_skip: bool = True) -> None:
        self.model = model
        self.max_tokens = max_tokens
        self.loaded = loaded  # a LoadedModel a caller already holds: its tokenizer is used
        self.factcheck = factcheck  # a FactCheckConfig when the fact-check probe may run
        self.negated = negated  # the negation the run asks, when it asks one
        self.probe_prompts = probe_prompts  # paraphrase, neighbourhood and portability prompts are asked
        self.option = option  # the command's option that sets the cap (None: it has none)
        self.can_skip = can_skip  # the command takes --on-bad-record skip
        self.tok: Any = None
        self.cap: int | None = None
        self.origin = ""
        self._ready = False
        self._chat_overhead = 0
        self._negations: dict[tuple[str, str | None], str | None] = {}

    # --- the tokenizer and the cap -------------------------------------------------------------
    def setup(self) -> list[str]:
        """Read the tokenizer and the cap; a warning line when they cannot be had without
        loading the model (the check is then skipped)."""
        if self._ready:
            return []
        self._ready = True
        if self.loaded is not None:
            return self._set(self.loaded.tokenizer, self.loaded.model.config.to_dict())
        source, why = model_files(self.model)
        if source is None:
            return [self._skipped(why)]
        from transformers import AutoConfig, AutoTokenizer

        from ..models.progress import quiet_progress

        try:
            with quiet_progress():
                tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
                config = AutoConfig.from_pretrained(source, local_files_only=True).to_dict()
        except (OSError, ValueError, KeyError) as exc:
            return [self._skipped(f"its tokenizer cannot be read without loading it ({type(exc).__name__})")]
        return self._set(tok, config)

    def _set(self, tok, config: dict[str, Any]) -> list[str]:
        context = context_length(config)
        if self.max_tokens is not None:
            self.cap, self.origin = self.max_tokens, f"max_prompt_tokens {self.max_tokens}"
        elif context is not None:
            self.cap, self.origin = context, f"max_prompt_tokens {context} (the model's context length)"
        else:
            return [self._skipped("its config.json states no context length"
                                  + (f"; set a cap with {self.option}" if self.option else ""))]
        self.tok = tok
        if self.factcheck is not None:
            from ..models.tokens import chat_prompt, has_chat_template

            if has_chat_template(tok):  # the template's tokens around the fact-check question
                self._chat_overhead = self._count([chat_prompt(tok, "", self.factcheck.system)])[0]
        return []

    def _skipped(self, why: str) -> str:
        return f"prompt lengths are not checked against {self.model}'s context: {why}"

    @property
    def active(self) -> bool:
        """Whether records are checked (``setup()`` first, to have its warning)."""
        self.setup()
        return self.tok is not None and self.cap is not None

    # --- the texts of a record ------------------------------------------------------------------
    def queries(self, record: EditRecord) -> Iterator[tuple[str, str]]:
        """(form, text) of every text the run feeds the model for ``record``."""
        from ..models.tokens import join_target

        targets = [t for t in (record.target_new, record.target_true) if t]
        longest = max(targets, key=len)
        yield "prompt", join_target(record.query, longest)
        if self.probe_prompts:
            for i, prompt in enumerate(record.paraphrase_prompts):
                yield f"paraphrase_prompts[{i}]", join_target(prompt, longest)
            for kind, probes in (("neighborhood", record.neighborhood), ("portability", record.portability)):
                for i, probe in enumerate(probes):
                    yield f"{kind}[{i}]", join_target(probe.prompt, max(probe.answers, key=len))
        negated = self._negated(record)
        if negated is not None:
            yield "negated prompt", join_target(negated, longest)
        if self.factcheck is not None:
            from ..probes.factcheck import statement_for, user_message

            found = statement_for(record, "new", self.factcheck)
            if found is not None:
                yield "fact-check question", user_message(found[0], self.factcheck)

    def _negated(self, record: EditRecord) -> str | None:
        """The negated query the run asks of ``record``: its own negated prompt, else the
        negation of its template (once per template)."""
        if self.negated is None:
            return None
        if record.negated_prompt:
            return record.negated_prompt
        key = (record.template, record.relation_id)
        if key not in self._negations:
            self._negations[key] = self.negated(*key)
        negated = self._negations[key]
        return None if negated is None else negated.format(record.subject)

    def _count(self, texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tok(list(texts), add_special_tokens=True, verbose=False)["input_ids"]]

    def over_cap(self, records: Sequence[EditRecord]) -> list[tuple[str, int]]:
        """Per record, its first query form over the cap, in the order of :meth:`queries` (the
        prompt before what is built from it), or ("", 0) when all fit."""
        forms = [list(self.queries(r)) for r in records]
        texts = list(dict.fromkeys(text for pairs in forms for _, text in pairs))
        counts = dict(zip(texts, self._count(texts))) if texts else {}
        out = []
        for pairs in forms:
            sized = [(form, counts[text] + (self._chat_overhead if form == "fact-check question" else 0))
                     for form, text in pairs]
            over = [item for item in sized if item[1] > (self.cap or 0)]
            out.append(over[0] if over else ("", 0))
        return out

    # --- checking -------------------------------------------------------------------------------
    def error(self, source: str, item: Overlong) -> DataError:
        remedies = ["shorten it"] + ([f"pass a larger {self.option}"] if self.option else []) + (
            ["leave such records out with --on-bad-record skip"] if self.can_skip else [])
        message = f"{describe(item)}, above {self.origin}; {_either(remedies)}"
        if item.position is None:  # known by its id only
            return DataError(source, f"record id {item.record.id}: field '{item.form}': {message}")
        if item.record.id != str(item.position):
            message = f"{message} (record id {item.record.id})"
        return DataError(source, message, index=item.position, field=item.form)

    def dropped_summary(self, dropped: Sequence[Overlong]) -> str:
        """How many entries skip mode left out as too long, and the first of them."""
        first = dropped[0]
        where = f"record {first.position}" if first.position is not None else f"record id {first.record.id}"
        entries = len({d.position if d.position is not None else d.record.id for d in dropped})
        return f"{entries} over {self.origin} (first: {where}, field '{first.form}': {describe(first)})"

    def check(self, records: Sequence[EditRecord], source: str, positions: Sequence[int] | None = None) -> None:
        """Every record within the cap, else a DataError naming the first one over it."""
        if not self.active:
            return
        for i, (form, n) in enumerate(self.over_cap(records)):
            if form:
                raise self.error(source, Overlong(positions[i] if positions else None, records[i], form, n))

    def select(self, records: Sequence[EditRecord], positions: Sequence[int], n: int | None
               ) -> tuple[list[EditRecord], list[Overlong], int | None]:
        """The records of the first ``n`` entries (None: all) whose records all fit, the
        records over the cap passed on the way, and the file position where the search
        stopped (None: the end of the file)."""
        if not self.active:
            count = _records_of(positions, n)
            return list(records)[:count], [], positions[count] if count < len(positions) else None
        kept: list[EditRecord] = []
        dropped: list[Overlong] = []
        taken = 0
        entries = _entries(positions)
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start: start + CHUNK]
            found = self.over_cap([records[i] for _, members in chunk for i in members])
            at = 0
            for pos, members in chunk:
                sizes = found[at: at + len(members)]
                at += len(members)
                over = [Overlong(pos, records[i], form, n_tok) for i, (form, n_tok) in zip(members, sizes) if form]
                if over:
                    dropped += over
                    continue
                kept += [records[i] for i in members]
                taken += 1
                if n is not None and taken >= n:
                    return kept, dropped, pos + 1
        return kept, dropped, None


def describe(item: Overlong) -> str:
    """What is too long, in words, with its size."""
    what = {"prompt": "the prompt with its subject and target", "negated prompt": "the negated prompt with its target",
            "fact-check question": "the fact-check question in the chat template"}
    return f"{what.get(item.form, 'the prompt with its answer')} has {item.n_tokens} tokens"


def _either(options: list[str]) -> str:
    """"a", "a or b", "a, b, or c"."""
    if len(options) < 3:
        return " or ".join(options)
    return ", ".join(options[:-1]) + ", or " + options[-1]


def _entries(positions: Sequence[int]) -> list[tuple[int, list[int]]]:
    """(file position, indices of its records) per entry, in order."""
    entries: list[tuple[int, list[int]]] = []
    for i, pos in enumerate(positions):
        if not entries or entries[-1][0] != pos:
            entries.append((pos, []))
        entries[-1][1].append(i)
    return entries


def _records_of(positions: Sequence[int], n: int | None) -> int:
    """How many records the first ``n`` entries hold."""
    if n is None:
        return len(positions)
    seen: list[int] = []
    for i, pos in enumerate(positions):
        if pos not in seen[-1:]:
            if len(seen) == n:
                return i
            seen.append(pos)
    return len(positions)
