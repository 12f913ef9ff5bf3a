"""Locate and look: causal tracing (which hidden states carry a fact) and the mechanism
analysis of docs/protocol.md#mechanism-analysis (what an editor's targets are for p and neg(p)).
Modules are imported by their full path (editprobe.analysis.tracing, .mechanism)."""
