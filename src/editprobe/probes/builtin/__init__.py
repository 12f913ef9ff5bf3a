"""The built-in probes; each registers itself. Their order is the default probe order."""

from . import negation, factcheck  # noqa: F401,I001  isort: skip
