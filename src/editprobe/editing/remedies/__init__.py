"""Deprecated alias: ``editprobe.editing.remedies`` was split, its modules each in their own folder.

``ft`` is ``editprobe.editing.finetune.ft``; ``ike`` is ``editprobe.editing.incontext.ike``.
This package keeps old imports working for a deprecation period: it holds those modules under
their old names, and each of its modules is an alias of the moved module.
"""

import warnings

from ..finetune import ft  # noqa: F401
from ..incontext import ike  # noqa: F401

warnings.warn("editprobe.editing.remedies is deprecated: import "
              "editprobe.editing.finetune.ft or editprobe.editing.incontext.ike", DeprecationWarning, stacklevel=2)
__all__ = ["ft", "ike"]
