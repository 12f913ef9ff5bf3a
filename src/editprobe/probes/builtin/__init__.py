"""The built-in probes; each registers itself. Their order is the default probe order."""

from . import negation, factcheck, classic, portability, perplexity, fluency, grounded  # noqa: F401,I001  isort: skip
