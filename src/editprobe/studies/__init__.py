"""Studies: a grid of runs described by one YAML file (``editprobe study``). study.py expands the
file into runs, keeps the study directory (a copy of the file, one run directory and one status
file per run) and runs one run as the local backend does; backends/ holds what executes the runs.
A study sits above ``editprobe.runs``: every run is that package's experiment."""

from .backends import local, ray  # noqa: E402,F401  (register the built-in backends, local first)
