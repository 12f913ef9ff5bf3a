"""Deprecated alias: ``editprobe.editing.remedies.ike`` is now ``editprobe.editing.incontext.ike``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..incontext import ike as _moved

warnings.warn("editprobe.editing.remedies.ike is deprecated: import editprobe.editing.incontext.ike",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
