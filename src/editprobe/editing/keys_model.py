"""Deprecated alias: ``editprobe.editing.keys_model`` is now ``editprobe.editing.settings.model_keys``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .settings import model_keys as _moved

warnings.warn("editprobe.editing.keys_model is deprecated: import editprobe.editing.settings.model_keys",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
