"""Deprecated alias: ``editprobe.editing.stats_source`` is now ``editprobe.editing.lte.stats_source``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import stats_source as _moved

warnings.warn("editprobe.editing.stats_source is deprecated: import editprobe.editing.lte.stats_source",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
