"""Deprecated alias: ``editprobe.editing.stats_store`` is now ``editprobe.editing.lte.stats_store``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import stats_store as _moved

warnings.warn("editprobe.editing.stats_store is deprecated: import editprobe.editing.lte.stats_store",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
