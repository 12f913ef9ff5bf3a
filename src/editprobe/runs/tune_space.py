"""Deprecated alias: ``editprobe.runs.tune_space`` is now ``editprobe.jobs.tune.space``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..jobs.tune import space as _moved

warnings.warn("editprobe.runs.tune_space is deprecated: import editprobe.jobs.tune.space",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
