"""Deprecated alias: ``editprobe.editing.methods.pmet`` is now ``editprobe.editing.lte.methods.pmet``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..lte.methods import pmet as _moved

warnings.warn("editprobe.editing.methods.pmet is deprecated: import editprobe.editing.lte.methods.pmet",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
