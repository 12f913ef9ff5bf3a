"""editprobe: knowledge editing in causal LMs, evaluated beyond the literal target string."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # editprobe.evaluate without importing torch at ``import editprobe`` (the CLI's start stays fast)
    if name == "evaluate":
        from .evaluation import evaluate

        return evaluate
    raise AttributeError(f"module 'editprobe' has no attribute {name!r}")
