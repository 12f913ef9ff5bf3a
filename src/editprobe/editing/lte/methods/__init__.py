"""One small module per method; each states only how it differs from the engine and
registers itself (``@register_method``). Importing this package registers them all."""

from . import adaedit, alphaedit, emmet, lti, memit, namet, pmet, prune, rect, rome  # noqa: F401
