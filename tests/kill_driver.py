"""Runs the editprobe CLI in a subprocess that signals itself at a chosen point: the k-th
call of a named function, before or after it runs. By default a real kill -9 (no cleanup, no
finally, no atexit); with a fifth field ``INT``, a real SIGINT (what Ctrl-C sends). At a
deterministic place, with no test hook in the product.

    python tests/kill_driver.py MODULE:QUALNAME:K:before|after[:KILL|INT] -- editprobe args...

``pause`` instead of before/after holds the process after the k-th call until the file named
by $KILL_DRIVER_RESUME exists, creating $KILL_DRIVER_RESUME.reached when it gets there: a
test can start a second process while the first is at a known point.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import time
from pathlib import Path


def arm(spec: str, patch=setattr) -> None:
    """Signal this process at ``spec``; ``patch`` sets the wrapper (a MonkeyPatch's setattr
    undoes it after a test: an in-process SIGINT is a real one too)."""
    module_name, qualname, k, when, *sig = spec.split(":")
    signum = getattr(signal, f"SIG{sig[0] if sig else 'KILL'}")
    owner = importlib.import_module(module_name)
    *parents, attr = qualname.split(".")
    for name in parents:
        owner = getattr(owner, name)
    original = getattr(owner, attr)
    calls = {"n": 0}

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if when == "before" and calls["n"] == int(k):
            os.kill(os.getpid(), signum)
        result = original(*args, **kwargs)
        if when == "after" and calls["n"] == int(k):
            os.kill(os.getpid(), signum)
        if when == "pause" and calls["n"] == int(k):
            resume = Path(os.environ["KILL_DRIVER_RESUME"])
            Path(f"{resume}.reached").touch()
            deadline = time.monotonic() + 300
            while not resume.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return result

    patch(owner, attr, wrapper)


def command(spec: str, args: list[str]) -> list[str]:
    """The argv that runs ``editprobe ARGS`` killed at ``spec``."""
    return [sys.executable, __file__, spec, "--", *args]


if __name__ == "__main__":
    split = sys.argv.index("--")
    for spec in sys.argv[1:split]:
        arm(spec)
    from editprobe.cli import main

    sys.exit(main(sys.argv[split + 1:]))
