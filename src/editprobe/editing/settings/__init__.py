"""Editing settings: the typed hyperparameters and the files that ship them. hparams.py validates
and loads one YAML per method and model (hparams/<method>/<model key>.yaml), profiles.py the
named profiles (profiles/<name>/) and the choice of a run's file, model_keys.py which shipped
file belongs to a model."""
