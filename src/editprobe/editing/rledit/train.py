"""Deprecated alias: ``editprobe.editing.rledit.train`` is now ``editprobe.editing.rledit.objective``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from . import objective as _moved

warnings.warn("editprobe.editing.rledit.train is deprecated: import editprobe.editing.rledit.objective",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
