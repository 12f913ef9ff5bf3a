"""Deprecated alias: ``editprobe.editing.methods`` is now ``editprobe.editing.lte.methods``.

This package keeps old imports working for a deprecation period: it holds the moved package's
names, and each of its modules is an alias of the moved module.
"""

import warnings

from ..lte import methods as _moved

warnings.warn("editprobe.editing.methods is deprecated: import editprobe.editing.lte.methods",
              DeprecationWarning, stacklevel=2)
globals().update({name: value for name, value in vars(_moved).items() if not name.startswith("__")})
if hasattr(_moved, "__all__"):
    __all__ = list(_moved.__all__)
