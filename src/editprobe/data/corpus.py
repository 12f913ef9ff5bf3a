"""Plain-text corpora for second-moment (covariance) statistics.

``load_corpus(spec)``: None or "wikitext-sample" -> the built-in WikiText-2 sample; a
``.txt`` path (documents separated by blank lines); a ``.jsonl`` path (field "text");
``hf:NAME[:CONFIG[:SPLIT]]`` -> a Hugging Face dataset, streamed (needs ``datasets``);
``wikipedia`` -> English Wikipedia, a dated snapshot, streamed (the C0 corpus of the
shipped configs of models >= 1B). ``sample`` picks which documents are read: the first N, or a
seeded random sample (``corpus_sample.py``); ``wikipedia`` draws at random by default.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from functools import cached_property
from itertools import islice
from pathlib import Path

from .builtin_data import BUILTIN_CORPORA
from .corpus_sample import (DEFAULT_SAMPLE, DEFAULT_SAMPLE_SEED, SAMPLE_MODES, SHUFFLE_BUFFER, describe,
                            permutation_prefix, sampled_in_file_order, sampling_key)
from ..errors import UserError
from .errors import DataError

DEFAULT_CORPUS = "wikitext-sample"
# English Wikipedia for C0. The references load the legacy "wikipedia" script dataset
# (MEMIT and AlphaEdit rome/layer_stats.py: 20200501.en; the paper's FE
# locate_edit_utils/layer_stats.py: 20220301.en), which current `datasets` cannot run; the
# parquet snapshot 20231101.en of wikimedia/wikipedia is the pinned replacement.
NAMED_HF_CORPORA = {"wikipedia": ("wikimedia/wikipedia", "20231101.en", "train")}
HUB_TIMEOUT_S = 8


class CorpusUnavailableError(UserError, ValueError):
    pass
IDENTITY_LENGTH = 16


class Corpus(ABC):
    """A named sequence of documents; ``identity`` is a short hash of its content and of how
    documents are sampled from it (a cache key)."""

    name: str
    sample: str = "first"  # which documents texts(n) gives: corpus_sample.SAMPLE_MODES
    seed: int = DEFAULT_SAMPLE_SEED
    streamed = False  # a streamed corpus draws `random` through a shuffle buffer
    remote = False  # read over the network (a job checks it is reachable before any work)

    def _content_identity(self) -> str:
        """A short hash of the documents (a subclass may instead override ``identity``)."""
        raise NotImplementedError(f"{type(self).__name__} must define _content_identity or identity")

    @abstractmethod
    def _documents(self) -> Iterator[str]: ...

    @cached_property
    def identity(self) -> str:
        extra = sampling_key(self.sample, self.seed, streamed=self.streamed)
        base = self._content_identity()
        return base if not extra else hashlib.sha256(f"{base}|{extra}".encode()).hexdigest()[:IDENTITY_LENGTH]

    def sampling(self) -> dict:
        """How the documents are picked, as every run records it with its C0."""
        return describe(self.sample, self.seed)

    def texts(self, n_docs: int | None = None) -> Iterator[str]:
        """``n_docs`` non-empty documents (all when None): the first ones in file order, or the
        sample ``sample`` draws."""
        if n_docs is not None and n_docs < 0:
            raise ValueError(f"n_docs must be >= 0, got {n_docs}")
        return islice(self._sampled_documents(n_docs), n_docs)

    def _sampled_documents(self, n_docs: int | None) -> Iterator[str]:
        if self.sample == "first":
            return self._documents()
        return sampled_in_file_order(self._documents, n_docs, self.seed)  # a local file: exact

    def _set_sampling(self, sample: str, seed: int) -> None:
        if sample not in SAMPLE_MODES:
            raise ValueError(f"sample must be one of {', '.join(SAMPLE_MODES)}, got {sample!r}")
        self.sample, self.seed = sample, seed
        self.__dict__.pop("identity", None)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:IDENTITY_LENGTH]


class TextFileCorpus(Corpus):
    """A UTF-8 text file; documents are separated by one or more blank lines. ``first`` and
    ``last`` take a slice of its documents (negative: from the end), part of the identity."""

    def __init__(self, path: str | Path, name: str | None = None, first: int = 0, last: int | None = None):
        self.path = Path(path)
        self.name = name or str(self.path)
        self.first, self.last = first, last

    def _content_identity(self) -> str:
        digest = _hash_file(self.path)
        if self.first == 0 and self.last is None:
            return digest
        return hashlib.sha256(f"{digest}[{self.first}:{self.last}]".encode()).hexdigest()[:IDENTITY_LENGTH]

    def _documents(self) -> Iterator[str]:
        if self.first == 0 and self.last is None:
            return self._all_documents()
        if self.first >= 0 and (self.last is None or self.last >= 0):
            return islice(self._all_documents(), self.first, self.last)
        return iter(list(self._all_documents())[self.first:self.last])  # counted from the end: read it all

    def _all_documents(self) -> Iterator[str]:
        lines: list[str] = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    lines.append(line.rstrip("\n"))
                elif lines:
                    yield "\n".join(lines).strip()
                    lines = []
        if lines:
            yield "\n".join(lines).strip()


class JsonlCorpus(Corpus):
    """JSON Lines, one document per line in the string field ``text_field``."""

    def __init__(self, path: str | Path, name: str | None = None, text_field: str = "text"):
        self.path = Path(path)
        self.name = name or str(self.path)
        self.text_field = text_field

    def _content_identity(self) -> str:
        return _hash_file(self.path)

    def _documents(self) -> Iterator[str]:
        with self.path.open(encoding="utf-8") as fh:
            index = 0
            for line in fh:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(self.path, f"not valid JSON: {exc.msg}", index=index) from None
                text = obj.get(self.text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    raise DataError(self.path, "missing or not a string", index=index, field=self.text_field)
                index += 1
                if text.strip():
                    yield text.strip()


class HFCorpus(Corpus):
    """A Hugging Face dataset, streamed. ``identity`` hashes the spec and the sampling, not the
    content (which is remote): pin a dated config (e.g. ``20231101.en``) for stable caches.
    A local directory of data files is read the same way, without the hub."""

    streamed = True

    def __init__(self, dataset: str, config: str | None = None, split: str = "train", text_field: str = "text",
                 name: str | None = None):
        self.dataset, self.config, self.split, self.text_field = dataset, config, split, text_field
        self.name = name or "hf:" + ":".join(p for p in (dataset, config, split) if p)

    def _content_identity(self) -> str:
        key = f"hf:{self.dataset}:{self.config or ''}:{self.split}:{self.text_field}"
        return hashlib.sha256(key.encode()).hexdigest()[:IDENTITY_LENGTH]

    @property
    def remote(self) -> bool:
        return not Path(self.dataset).is_dir()  # `datasets` reads a local directory before the hub

    def check_available(self) -> None:
        """Before any work: the corpus can be streamed from here (one line saying what to do
        otherwise). Checked only when the statistics it would give are not cached."""
        reason = None
        if importlib.util.find_spec("datasets") is None:
            reason = "the `datasets` package is not installed (pip install 'editprobe[wikipedia]')"
        elif os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
                os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
            reason = "HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set"
        else:
            from huggingface_hub import HfApi

            try:
                HfApi().dataset_info(self.dataset, timeout=HUB_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - no network, 404, gated: all one line
                reason = f"the Hugging Face hub cannot be reached or has no {self.dataset} ({type(exc).__name__})"
        if reason is not None:
            raise CorpusUnavailableError(
                f"C0 corpus {self.name}: {reason}. Point mom2_corpus at a local corpus (--set mom2_corpus=FILE.txt "
                f"with documents separated by blank lines, or FILE.jsonl with a 'text' field), or use the built-in "
                f"sample (--set mom2_corpus=wikitext-sample: far fewer documents, a warning says how many)")

    def _documents(self) -> Iterator[str]:
        datasets = importlib.import_module("datasets")  # optional dependency, checked in load_corpus
        yield from self._texts(datasets.load_dataset(self.dataset, self.config, split=self.split, streaming=True))

    def _sampled_documents(self, n_docs: int | None) -> Iterator[str]:
        if self.sample == "first":
            return self._documents()
        if self.sample == "uniform":
            return self._uniform_documents()
        return self._shuffled_documents()

    def _shuffled_documents(self) -> Iterator[str]:
        """A seeded random sample, streamed: the shard order is shuffled, a parquet file split
        into its row groups first, so the documents come from random row groups across the
        whole split, drawn through a buffer of SHUFFLE_BUFFER documents."""
        datasets = importlib.import_module("datasets")
        stream = datasets.load_dataset(self.dataset, self.config, split=self.split, streaming=True)
        yield from self._texts(stream.reshard().shuffle(seed=self.seed, buffer_size=SHUFFLE_BUFFER))

    def _uniform_documents(self) -> Iterator[str]:
        """The reference's draw: the whole split on disk (the HF cache), a seeded permutation
        of every row index, read in that order."""
        datasets = importlib.import_module("datasets")
        rows = datasets.load_dataset(self.dataset, self.config, split=self.split).select_columns([self.text_field])
        yield from self._texts(rows[index] for index in permutation_prefix(len(rows), None, self.seed))

    def _texts(self, examples) -> Iterator[str]:
        for example in examples:
            text = example.get(self.text_field)
            if isinstance(text, str) and text.strip():
                yield text.strip()


def _hf_corpus(spec: str) -> HFCorpus:
    parts = spec[len("hf:") :].split(":")
    if not parts[0] or len(parts) > 3 or any(not p for p in parts):
        raise DataError(None, f"bad corpus spec {spec!r}: expected hf:NAME[:CONFIG[:SPLIT]]")
    if importlib.util.find_spec("datasets") is None:
        raise DataError(None, f"corpus {spec!r} needs the Hugging Face `datasets` package: pip install datasets")
    name, config, split = (parts + [None, None])[:3]
    return HFCorpus(name, config, split or "train")


def load_corpus(spec: str | Path | None = None, sample: str | None = None,
                seed: int = DEFAULT_SAMPLE_SEED) -> Corpus:
    """A corpus from a spec (see the module docstring); None is the built-in sample. ``sample``
    (None: ``random`` for ``wikipedia``, ``first`` for the others) and ``seed`` pick the
    documents (``corpus_sample.py``)."""
    spec_str = DEFAULT_CORPUS if spec is None else str(spec)
    corpus = _corpus(spec_str)
    corpus._set_sampling(sample or DEFAULT_SAMPLE.get(spec_str, "first"), seed)
    return corpus


def _corpus(spec_str: str) -> Corpus:
    builtin = BUILTIN_CORPORA.get(spec_str)
    if builtin is not None:
        return TextFileCorpus(builtin.path, name=builtin.name, first=builtin.first, last=builtin.last)
    if spec_str in NAMED_HF_CORPORA:  # availability is checked before work (check_available)
        dataset, config, split = NAMED_HF_CORPORA[spec_str]
        return HFCorpus(dataset, config, split, name=spec_str)
    if spec_str.startswith("hf:"):
        return _hf_corpus(spec_str)
    path = Path(spec_str).expanduser()
    if not path.is_file():
        known = ", ".join(BUILTIN_CORPORA)
        raise DataError(path, f"no such file, and not a built-in corpus ({known}), wikipedia or hf:NAME[:CONFIG[:SPLIT]]")
    if path.suffix == ".txt":
        return TextFileCorpus(path)
    if path.suffix == ".jsonl":
        return JsonlCorpus(path)
    raise DataError(path, "unsupported corpus file: expected .txt (documents separated by blank lines) or .jsonl (field 'text')")
