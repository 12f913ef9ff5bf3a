"""``editprobe tune``: the search of a method's settings with Optuna on a dev split (search.py),
its config, dev split and search space (space.py), and the hparams YAML it writes with its
evidence as comments (output.py)."""
