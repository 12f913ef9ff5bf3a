"""Deprecated alias: ``editprobe.runs.study`` is now ``editprobe.studies.study``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..studies import study as _moved

warnings.warn("editprobe.runs.study is deprecated: import editprobe.studies.study",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
