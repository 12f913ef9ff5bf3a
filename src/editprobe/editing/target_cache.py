"""Deprecated alias: ``editprobe.editing.target_cache`` is now ``editprobe.editing.lte.target_cache``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import target_cache as _moved

warnings.warn("editprobe.editing.target_cache is deprecated: import editprobe.editing.lte.target_cache",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
