"""Runs: the experiment of ``editprobe run`` and the kit every job uses. The experiment: the run
config (config.py) and the plan it builds (plan.py), the loop with checkpoints and resume
(loop.py), the run directory (store.py) and its summary (summary.py). The kit, shared with the
jobs (``editprobe.jobs``) and studies (``editprobe.studies``), which sit above this package:
sequential editing (sequential.py), the checks before a model loads (preflight.py, lengths.py)
and the advice after a failure (advice.py); builtin/ holds the demo's run config."""

from .config import RunConfig, RunConfigError, dataset_key
from .loop import Experiment, run_experiment
from .plan import RunPlan
from .store import RunDir, RunExistsError, read_samples, read_summary

__all__ = ["Experiment", "RunConfig", "RunConfigError", "RunDir", "RunExistsError", "RunPlan", "dataset_key",
           "read_samples", "read_summary", "run_experiment"]
