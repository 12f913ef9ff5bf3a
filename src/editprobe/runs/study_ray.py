"""Deprecated alias: ``editprobe.runs.study_ray`` is now ``editprobe.studies.backends.ray``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..studies.backends import ray as _moved

warnings.warn("editprobe.runs.study_ray is deprecated: import editprobe.studies.backends.ray",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
