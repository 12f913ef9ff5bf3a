"""Deprecated alias: ``editprobe.editing.covariance`` is now ``editprobe.editing.lte.covariance``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import covariance as _moved

warnings.warn("editprobe.editing.covariance is deprecated: import editprobe.editing.lte.covariance",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
