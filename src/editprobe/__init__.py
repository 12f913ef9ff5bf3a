"""editprobe: knowledge editing in causal LMs, evaluated beyond the literal target string."""

__version__ = "0.1.0"
