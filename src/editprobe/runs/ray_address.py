"""Deprecated alias: ``editprobe.runs.ray_address`` is now ``editprobe.studies.backends.ray_address``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..studies.backends import ray_address as _moved

warnings.warn("editprobe.runs.ray_address is deprecated: import editprobe.studies.backends.ray_address",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
