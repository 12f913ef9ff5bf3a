"""Deprecated alias: ``editprobe.editing.remedies.ft_parts`` is now ``editprobe.editing.finetune.rows``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from ..finetune import rows as _moved

warnings.warn("editprobe.editing.remedies.ft_parts is deprecated: import editprobe.editing.finetune.rows",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
