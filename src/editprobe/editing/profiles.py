"""Deprecated alias: ``editprobe.editing.profiles`` is now ``editprobe.editing.settings.profiles``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .settings import profiles as _moved

warnings.warn("editprobe.editing.profiles is deprecated: import editprobe.editing.settings.profiles",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
