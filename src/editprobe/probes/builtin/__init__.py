"""The built-in probes; each registers itself. Their order is the default probe order."""

from . import negation, factcheck, classic, portability, perplexity, fluency  # noqa: F401,I001  isort: skip
# The shortcut battery (docs/battery.md).
from . import question_forms, two_choice  # noqa: F401,I001  isort: skip
from . import heldout_negation, distraction  # noqa: F401,I001  isort: skip
from . import subject_bleed, knowedit_kinds  # noqa: F401,I001  isort: skip
from . import grounded  # noqa: F401,I001  isort: skip  (after its parts)
