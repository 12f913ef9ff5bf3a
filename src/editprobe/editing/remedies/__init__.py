"""Editors that are not locate-then-edit, measured on the same probes as the LTE methods:
in-context editing (``ike``) and constrained fine-tuning with augmentation (``ft``)."""

from . import ft, ike  # noqa: F401  (register the methods)
