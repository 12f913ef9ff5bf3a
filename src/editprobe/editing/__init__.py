"""The LTE editing engine and its methods."""

from .engine import EditReport, LTEEditor
from .hparams import HParamsError, LTEHParams
from .registry import METHODS, lte_methods, make_editor, method_class, register_method, resolve_hparams

__all__ = ["EditReport", "HParamsError", "LTEEditor", "LTEHParams", "METHODS", "lte_methods", "make_editor", "method_class",
           "register_method", "resolve_hparams"]
