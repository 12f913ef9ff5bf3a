"""Locate and look: causal tracing (which hidden states carry a fact) and the mechanism
analysis of evaluation-protocol.md §5 (what an editor's targets are for p and neg(p)).
Modules are imported by their full path (editprobe.analysis.tracing, .mechanism)."""
