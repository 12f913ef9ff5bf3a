"""Deprecated alias: ``editprobe.editing.objective`` is now ``editprobe.editing.lte.objective``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import objective as _moved

warnings.warn("editprobe.editing.objective is deprecated: import editprobe.editing.lte.objective",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
