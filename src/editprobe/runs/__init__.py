"""Runs: the run config, the run's plan, the experiment loop with checkpoints and resume, the run
directory; studies (a grid of runs) and their backends."""

from .config import RunConfig, RunConfigError, dataset_key
from .loop import Experiment, run_experiment
from .plan import RunPlan
from .store import RunDir, RunExistsError, read_samples, read_summary
from . import study_local, study_ray  # noqa: E402,F401,I001  (register the built-in study backends)  isort: skip

__all__ = ["Experiment", "RunConfig", "RunConfigError", "RunDir", "RunExistsError", "RunPlan", "dataset_key",
           "read_samples", "read_summary", "run_experiment"]
