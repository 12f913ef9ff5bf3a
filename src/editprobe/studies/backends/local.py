"""The local backend of studies (``--backend local``, the default): every unfinished run on
this machine, one after another (:func:`~editprobe.studies.study.run_study`)."""

from __future__ import annotations

from ..study import StudyDir, run_study
from .base import BACKENDS, OnRun, StudyBackend, StudyRun


@BACKENDS.register
class LocalBackend(StudyBackend):
    """Every unfinished run here, one after another, with ``threads`` torch CPU threads (None:
    torch's default)."""

    name = "local"

    def __enter__(self) -> "LocalBackend":
        if self.threads is not None:
            import torch

            torch.set_num_threads(self.threads)
        return self

    def run(self, study: StudyDir, runs: list[StudyRun], on_run: OnRun | None = None) -> dict[str, str]:
        return run_study(study, runs, on_run=on_run)
