"""Placeholder: written in this session (see remedies/__init__)."""
