"""Jobs: the commands other than ``run`` and ``study``, one module or package per command:
``editprobe edit`` (edit.py), ``editprobe train rledit`` (train_rledit.py) and ``editprobe tune``
(tune/). Each has a validated config, a preflight that checks everything before a model loads,
and a run; they build on the kit in ``editprobe.runs``."""
