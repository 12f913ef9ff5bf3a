"""Constrained fine-tuning with augmentation (FT, ft.py): the editor, and its settings, report
types and training rows (rows.py); docs/ft.md."""
