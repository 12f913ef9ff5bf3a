"""Deprecated alias: ``editprobe.runs.tune_output`` is now ``editprobe.jobs.tune.output``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..jobs.tune import output as _moved

warnings.warn("editprobe.runs.tune_output is deprecated: import editprobe.jobs.tune.output",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
