"""Deprecated alias: ``editprobe.editing.cache_entries`` is now ``editprobe.editing.lte.cache_entries``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import cache_entries as _moved

warnings.warn("editprobe.editing.cache_entries is deprecated: import editprobe.editing.lte.cache_entries",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
