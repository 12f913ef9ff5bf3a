"""Study backends, what executes a study's unfinished runs: base.py declares the backend protocol
and the registry of backends; local.py runs them one after another in this process; ray.py runs
each as a Ray task on a local or a running cluster (ray_address.py checks a running cluster's
address first). Every backend runs each run exactly as ``editprobe run`` would, resumable from
its checkpoints."""
