"""Deprecated alias: ``editprobe.editing.stats_types`` is now ``editprobe.editing.lte.stats_types``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import stats_types as _moved

warnings.warn("editprobe.editing.stats_types is deprecated: import editprobe.editing.lte.stats_types",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
