"""Editing: the editor contract (api.py), the registry of methods (plugins.py: ``METHODS``;
registry.py: ``make_editor``, ``resolve_hparams``), the request conversion every family shares
(prompts.py), the settings (settings/), the LTE engine with its methods (lte/) and the editors
that are not locate-then-edit, each in its own folder: incontext/ (IKE), finetune/ (FT), rledit/
(RLEdit's hypernetwork)."""

from .lte.engine import EditReport, LTEEditor
from .settings.hparams import HParamsError, LTEHParams
from .registry import METHODS, lte_methods, make_editor, method_class, register_method, resolve_hparams

__all__ = ["EditReport", "HParamsError", "LTEEditor", "LTEHParams", "METHODS", "lte_methods", "make_editor", "method_class",
           "register_method", "resolve_hparams"]
