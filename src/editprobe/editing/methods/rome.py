"""Deprecated alias: ``editprobe.editing.methods.rome`` is now ``editprobe.editing.lte.methods.rome``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..lte.methods import rome as _moved

warnings.warn("editprobe.editing.methods.rome is deprecated: import editprobe.editing.lte.methods.rome",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
