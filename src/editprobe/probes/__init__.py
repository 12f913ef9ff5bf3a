"""Probes: every metric says how it was computed."""
