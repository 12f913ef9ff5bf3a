"""Deprecated alias: ``editprobe.editing.negation_terms`` is now ``editprobe.editing.lte.negation_terms``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import negation_terms as _moved

warnings.warn("editprobe.editing.negation_terms is deprecated: import editprobe.editing.lte.negation_terms",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
