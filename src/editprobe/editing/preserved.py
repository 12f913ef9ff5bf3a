"""Deprecated alias: ``editprobe.editing.preserved`` is now ``editprobe.editing.lte.preserved``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import preserved as _moved

warnings.warn("editprobe.editing.preserved is deprecated: import editprobe.editing.lte.preserved",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
