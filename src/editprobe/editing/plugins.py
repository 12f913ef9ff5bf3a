"""The registry of editing methods. A method registers itself where it is defined::

    @register_method
    class MyEditor(MEMITEditor):
        name = "mine"

Every entry is an :class:`~editprobe.editing.api.Editor` that sets ``name`` and
``hparams_cls`` and implements the contract's abstract methods; anything else is refused
when it registers (docs/howto/add-editor.md).
"""

from __future__ import annotations

from ..registry import Registry
from .api import Editor

METHODS: Registry[type[Editor]] = Registry("method", key=lambda cls: cls.name, file_names=True, base=Editor,
                                           required=("name", "hparams_cls"))
register_method = METHODS.register
