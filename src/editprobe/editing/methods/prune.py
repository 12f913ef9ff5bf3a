"""Deprecated alias: ``editprobe.editing.methods.prune`` is now ``editprobe.editing.lte.methods.prune``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..lte.methods import prune as _moved

warnings.warn("editprobe.editing.methods.prune is deprecated: import editprobe.editing.lte.methods.prune",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
