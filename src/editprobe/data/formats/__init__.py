"""The registry of dataset formats, in detection order (most specific first)."""

from __future__ import annotations

from .base import (DATASET_FORMATS, DatasetFormat, ScoringProtocol, format_kind, formats_of, is_question, record_id,
                   register_format)

# Each module registers its format. Detection tries them in import order, so a generic
# shape (easyedit: prompt/subject/target_new) comes after the shapes with distinctive keys.
from . import mquake, counterfact, paper, zsre, knowedit, easyedit  # noqa: E402,F401,I001  isort: skip


__all__ = ["DATASET_FORMATS", "DatasetFormat", "ScoringProtocol", "format_kind", "formats_of", "is_question", "record_id",
           "register_format"]
