"""Datasets as EditRecords (one loader per format, detected from the content), validation,
built-in sample data and text corpora for covariance statistics."""

from .builders import build_counterfact_sample, build_disjoint_sample, build_sample, build_wikitext_sample
from .builtin_data import BUILTIN_CORPORA, BUILTIN_DATASETS, resolve_data
from .corpus import Corpus, load_corpus
from .errors import BadRecord, DataError, FieldError
from .fields import RawEntry
from .formats import DATASET_FORMATS, DatasetFormat, register_format
from .loading import LoadResult, detect_format, load_records
from .records import EditRecord, EditRequest, PromptAnswer
from .wikitext import detokenize_wikitext

__all__ = [
    "BUILTIN_CORPORA",
    "BUILTIN_DATASETS",
    "build_disjoint_sample",
    "build_sample",
    "DATASET_FORMATS",
    "BadRecord",
    "Corpus",
    "DataError",
    "DatasetFormat",
    "EditRecord",
    "EditRequest",
    "FieldError",
    "LoadResult",
    "PromptAnswer",
    "RawEntry",
    "build_counterfact_sample",
    "build_wikitext_sample",
    "detect_format",
    "detokenize_wikitext",
    "load_corpus",
    "load_records",
    "register_format",
    "resolve_data",
]
