"""Deprecated alias: ``editprobe.editing.engine`` is now ``editprobe.editing.lte.engine``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import engine as _moved

warnings.warn("editprobe.editing.engine is deprecated: import editprobe.editing.lte.engine",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
