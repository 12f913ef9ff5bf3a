"""Deprecated alias: ``editprobe.editing.corpus_batches`` is now ``editprobe.editing.lte.corpus_batches``.

This path keeps old imports working for a deprecation period: importing it gives the moved
module itself (``sys.modules`` points the old name at it), so attributes, patches and
identities are the moved module's.
"""

import sys
import warnings

from .lte import corpus_batches as _moved

warnings.warn("editprobe.editing.corpus_batches is deprecated: import editprobe.editing.lte.corpus_batches",
              DeprecationWarning, stacklevel=2)
sys.modules[__name__] = _moved
