"""Deprecated alias: ``editprobe.editing.c0_pass`` is now ``editprobe.editing.lte.c0_pass``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import c0_pass as _moved

warnings.warn("editprobe.editing.c0_pass is deprecated: import editprobe.editing.lte.c0_pass",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
