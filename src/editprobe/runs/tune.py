"""Deprecated alias: ``editprobe.runs.tune`` is now ``editprobe.jobs.tune.search``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..jobs.tune import search as _moved

warnings.warn("editprobe.runs.tune is deprecated: import editprobe.jobs.tune.search",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
