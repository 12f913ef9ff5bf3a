"""Deprecated alias: ``editprobe.runs.study_local`` is now ``editprobe.studies.backends.local``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..studies.backends import local as _moved

warnings.warn("editprobe.runs.study_local is deprecated: import editprobe.studies.backends.local",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
