"""Editors that keep their edits beside the weights and consult them in the forward (hooks): a
codebook of key → value replacements (GRACE), a side memory with a router (WISE). The weights
stay untouched, so ``edit_in_weights`` is False and the probes ask the model as it is."""
