"""Deprecated alias: ``editprobe.editing.hparams`` is now ``editprobe.editing.settings.hparams``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .settings import hparams as _moved

warnings.warn("editprobe.editing.hparams is deprecated: import editprobe.editing.settings.hparams",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
