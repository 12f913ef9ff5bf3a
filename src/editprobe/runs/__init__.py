"""Runs: the run config, the experiment loop with checkpoints and resume, the run directory."""

from .config import RunConfig, RunConfigError, dataset_key
from .loop import Experiment, run_experiment
from .store import RunDir, RunExistsError, read_samples, read_summary

__all__ = ["Experiment", "RunConfig", "RunConfigError", "RunDir", "RunExistsError", "dataset_key", "read_samples",
           "read_summary", "run_experiment"]
