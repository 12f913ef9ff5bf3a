"""Forward replay moved to :mod:`editprobe.models.replay` (tracing uses it too); this module
keeps the old import path working."""

from ..models.replay import _StandIn, block_output_arity, final_hidden, logits_at, replay_from  # noqa: F401

__all__ = ["block_output_arity", "final_hidden", "logits_at", "replay_from"]
