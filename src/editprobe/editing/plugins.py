"""The registry of editing methods. A method registers itself where it is defined::

    @register_method
    class MyEditor(MEMITEditor):
        name = "mine"
"""

from __future__ import annotations

from ..registry import Registry

METHODS: Registry = Registry("method", key=lambda cls: cls.name, file_names=True)
register_method = METHODS.register
