"""Typed access to one raw JSON record, for format converters.

Every accessor raises :class:`FieldError` naming the (dotted) field, so a converter reads
like a schema and the loader can report ``file: record i: field f: message``.

Normalisation shared by all formats: subjects, targets and answers are stripped of
surrounding whitespace (KnowEdit's zsRE has subjects such as ``"Angora goat "`` that
would otherwise not be found in their prompt, and editors add the space before a target
themselves).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import FieldError
from .records import PromptAnswer


def _type_name(value: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), type(value).__name__
    )


class RawEntry:
    """One JSON object of a dataset file, with ``prefix`` giving the path of nested objects.

    It remembers which keys the converter asked for, so the loader can name the fields a
    format does not read (:meth:`unread`) instead of dropping them in silence. A converter
    that takes ``.data`` itself is assumed to read everything."""

    def __init__(self, data: Mapping[str, Any], prefix: str = ""):
        self._data = data
        self.prefix = prefix
        self._read: set[str] = set()
        self._opaque = False

    @property
    def data(self) -> Mapping[str, Any]:
        self._opaque = True  # what the converter does with it is not seen
        return self._data

    def unread(self) -> list[str]:
        """The keys of this object no accessor was asked for (none once ``.data`` was taken)."""
        return [] if self._opaque else sorted(k for k in self._data if k not in self._read)

    def path(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def has(self, key: str) -> bool:
        self._read.add(key)
        return self._data.get(key) is not None

    def get(self, key: str, default: Any = None) -> Any:
        self._read.add(key)
        return self._data.get(key, default)

    def require(self, key: str) -> Any:
        self._read.add(key)
        if key not in self._data or self._data[key] is None:
            raise FieldError(self.path(key), "missing")
        return self._data[key]

    def text(self, key: str) -> str:
        """A required, non-blank string (stripped)."""
        value = self.require(key)
        if not isinstance(value, str):
            raise FieldError(self.path(key), f"expected a string, got {_type_name(value)}")
        if not value.strip():
            raise FieldError(self.path(key), "must not be empty")
        return value.strip()

    def optional_text(self, key: str) -> str | None:
        """A string or absent/null/blank (-> None)."""
        if not self.has(key):
            return None
        value = self._data[key]
        if not isinstance(value, str):
            raise FieldError(self.path(key), f"expected a string, got {_type_name(value)}")
        return value.strip() or None

    def identifier(self, key: str) -> str | None:
        """An id (int or string) as a string, or None when absent."""
        if not self.has(key):
            return None
        value = self._data[key]
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise FieldError(self.path(key), f"expected an integer or string id, got {_type_name(value)}")
        if isinstance(value, str) and not value.strip():
            raise FieldError(self.path(key), "must not be empty")
        return str(value).strip()

    def texts(self, key: str, required: bool = False) -> tuple[str, ...]:
        """A string or a list of strings (blank items dropped); absent -> ``()``."""
        if not self.has(key):
            if required:
                raise FieldError(self.path(key), "missing")
            return ()
        value = self._data[key]
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise FieldError(self.path(key), f"expected a string or a list of strings, got {_type_name(value)}")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise FieldError(f"{self.path(key)}[{i}]", f"expected a string, got {_type_name(item)}")
        out = tuple(s.strip() for s in items if s.strip())
        if required and not out:
            raise FieldError(self.path(key), "must not be empty")
        return out

    def answers(self, key: str, required: bool = False) -> tuple[str, ...]:
        """A string or arbitrarily nested lists of strings, flattened in order without
        duplicates (KnowEdit nests aliases as ``[["Syrian pound", "SYP"]]``)."""
        if not self.has(key):
            if required:
                raise FieldError(self.path(key), "missing")
            return ()
        flat = flatten_answers(self._data[key], self.path(key))
        if required and not flat:
            raise FieldError(self.path(key), "must contain at least one non-empty answer")
        return flat

    def child(self, key: str) -> "RawEntry":
        value = self.require(key)
        if not isinstance(value, dict):
            raise FieldError(self.path(key), f"expected an object, got {_type_name(value)}")
        return RawEntry(value, prefix=f"{self.path(key)}.")

    def children(self, key: str) -> list["RawEntry"]:
        """A required non-empty list of objects."""
        value = self.require(key)
        if not isinstance(value, list) or not value:
            raise FieldError(self.path(key), f"expected a non-empty array of objects, got {_type_name(value)}")
        out = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                raise FieldError(f"{self.path(key)}[{i}]", f"expected an object, got {_type_name(item)}")
            out.append(RawEntry(item, prefix=f"{self.path(key)}[{i}]."))
        return out


def flatten_answers(value: Any, field: str) -> tuple[str, ...]:
    out: list[str] = []

    def walk(v: Any, where: str) -> None:
        if isinstance(v, str):
            if v.strip() and v.strip() not in out:
                out.append(v.strip())
        elif isinstance(v, list):
            for i, item in enumerate(v):
                walk(item, f"{where}[{i}]")
        else:
            raise FieldError(where, f"expected a string or a list of strings, got {_type_name(v)}")

    walk(value, field)
    return tuple(out)


def template_from_prompt(entry: RawEntry, prompt_key: str, subject: str) -> str:
    """The prompt as a template with exactly one ``{}``.

    A prompt that already has ``{}`` is used as is. Otherwise the *first* occurrence of the
    subject becomes ``{}`` — not every occurrence as EasyEdit does: a template has exactly
    one subject slot (the edit key is read at the end of that mention), and replacing the
    first occurrence keeps ``template.format(subject) == prompt`` with any later mention
    left as ordinary text.
    """
    prompt = entry.text(prompt_key)
    field = entry.path(prompt_key)
    n = prompt.count("{}")
    if n > 1:
        raise FieldError(field, f"has {n} '{{}}' placeholders, expected one: {prompt!r}")
    template = prompt if n == 1 else None
    if template is None:
        if subject not in prompt:
            raise FieldError(entry.path("subject"), f"{subject!r} does not occur in {prompt_key} {prompt!r}")
        template = prompt.replace(subject, "{}", 1)
    rest = template.replace("{}", "", 1)
    if "{" in rest or "}" in rest:
        # str.format would choke on (or silently consume) any other brace.
        raise FieldError(field, f"contains a brace other than the one '{{}}' placeholder: {prompt!r}")
    return template


def prompt_answers(entry: RawEntry, key: str, answer_key: str = "ground_truth") -> tuple[PromptAnswer, ...]:
    """KnowEdit-style ``{kind: [{prompt, ground_truth}, ...]}`` (a single object per kind
    is accepted too) -> PromptAnswers tagged with their kind."""
    if not entry.has(key):
        return ()
    groups = entry.get(key)
    if not isinstance(groups, dict):
        raise FieldError(entry.path(key), f"expected an object {{kind: [{{prompt, {answer_key}}}]}}, got {_type_name(groups)}")
    out: list[PromptAnswer] = []
    for kind, items in groups.items():
        items = [items] if isinstance(items, dict) else items
        if not isinstance(items, list):
            raise FieldError(f"{entry.path(key)}.{kind}", f"expected an array of objects, got {_type_name(items)}")
        for i, item in enumerate(items):
            where = f"{entry.path(key)}.{kind}[{i}]"
            if not isinstance(item, dict):
                raise FieldError(where, f"expected an object, got {_type_name(item)}")
            sub = RawEntry(item, prefix=f"{where}.")
            prompts = sub.texts("prompt", required=True)
            answers = sub.answers(answer_key, required=True)
            # Some KnowEdit files pair a list of prompts with one answer list.
            out.extend(PromptAnswer(prompt=p, answers=answers, kind=kind) for p in prompts)
    return tuple(out)


def negated_prompt(entry: RawEntry, subject: str, keys: tuple[str, ...] = ("negated_prompt",)) -> str | None:
    """A record's own negated query (the first of ``keys`` present), subject filled in: a
    prompt with one ``{}`` gets the subject; a filled one is kept as it is."""
    for key in keys:
        text = entry.optional_text(key)
        if text is None:
            continue
        n = text.count("{}")
        if n > 1:
            raise FieldError(entry.path(key), f"has {n} '{{}}' placeholders, expected at most one: {text!r}")
        return text.replace("{}", subject) if n == 1 else text
    return None
