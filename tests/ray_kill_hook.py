"""A Ray worker setup hook for tests/test_study_ray.py: SIGKILLs the worker running a chosen
run right after that run's first checkpoint, as the OOM killer would (no cleanup, no finally).
Armed only by a test, through its Ray job's runtime_env (``worker_process_setup_hook:
ray_kill_hook.arm`` and the variables below); the product has no hook. No tests here.

- ``EDITPROBE_TEST_KILL_RUN``: the run's name (its directory's name).
- ``EDITPROBE_TEST_KILL_MARKER``: a file the hook creates just before the kill, holding the
  run's progress.json at that moment. Once it exists the hook stands down, so Ray's retry
  runs to the end...
- ``EDITPROBE_TEST_KILL_ALWAYS=1``: ...unless this is set: then every attempt is killed (one
  line appended to the marker per attempt), until Ray's retries are spent.
- ``EDITPROBE_TEST_LINGER_S``: (no kill) each run waits this long after recording a stage or
  progress line in its status, so the driver, polling every second, shows every line.
"""

from __future__ import annotations

import os
import signal


def arm() -> None:
    linger = os.environ.get("EDITPROBE_TEST_LINGER_S")
    if linger:
        _linger(float(linger))
    target = os.environ.get("EDITPROBE_TEST_KILL_RUN")
    if not target:
        return
    from editprobe.runs.store import RunDir

    marker = os.environ["EDITPROBE_TEST_KILL_MARKER"]
    always = os.environ.get("EDITPROBE_TEST_KILL_ALWAYS") == "1"
    original = RunDir.record_checkpoint

    def record_checkpoint(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.root.name != target:
            return
        if always:
            with open(marker, "a") as f:
                f.write(f"attempt killed, pid {os.getpid()}\n")
        else:
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return  # killed once already: this is the retry
            os.write(fd, (self.root / "progress.json").read_bytes())
            os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)

    RunDir.record_checkpoint = record_checkpoint


def _linger(seconds: float) -> None:
    import time

    from editprobe.studies.study import StudyDir

    original = StudyDir.set_progress

    def set_progress(self, *args, **kwargs):
        original(self, *args, **kwargs)
        time.sleep(seconds)

    StudyDir.set_progress = set_progress
