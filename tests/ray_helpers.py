"""A local Ray head for tests (the study backend's and the cluster how-to's)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def local_ray_head(env: dict[str, str], prefix: str = "ep-ray-") -> Iterator[str]:
    """HOST:PORT of a 2-CPU Ray head started with ``env`` (plus no usage stats and no token
    authentication, whatever ~/.ray holds), stopped by its pid on exit."""
    temp = Path(tempfile.mkdtemp(prefix=prefix))  # short: Ray's socket paths must fit 107 bytes
    log = temp / "ray-start.log"
    env = {**env, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
             f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
             "--disable-usage-stats", f"--temp-dir={temp}", "--object-store-memory=100000000"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while "block forever" not in log.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()  # `ray start --block` stops the processes it started on SIGTERM
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(temp, ignore_errors=True)
