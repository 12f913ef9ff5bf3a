"""Deprecated alias: ``editprobe.runs.edit_job`` is now ``editprobe.jobs.edit``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..jobs import edit as _moved

warnings.warn("editprobe.runs.edit_job is deprecated: import editprobe.jobs.edit",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
