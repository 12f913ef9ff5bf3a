"""The spellings of a config's hyperparameter overrides.

Overrides are written ``set:`` in a run config or a study (as ``--set`` on the command line);
``overrides:`` is the earlier spelling, still read. Inside, the field keeps the name
``overrides``, so a saved run's config (and identity) is what it was.
"""

from __future__ import annotations

from typing import Any

OVERRIDES_SPELLINGS = ("set", "overrides")


def one_overrides_key(fields: dict[str, Any], where: str, error: type[Exception]) -> dict[str, Any]:
    """``fields`` with its hparams overrides under the field's name, whichever spelling the
    user wrote; both spellings at once raises ``error`` naming ``where`` (a file, an entry)."""
    given = [key for key in OVERRIDES_SPELLINGS if key in fields]
    if len(given) > 1:
        raise error(f"{where}: both 'set' and 'overrides' given: they are one field, the hparams "
                    f"overrides ('overrides' is the old name of 'set'); keep one")
    if "set" not in fields:
        return fields
    return {**{k: v for k, v in fields.items() if k != "set"}, "overrides": fields["set"]}


def study_overrides_keys(raw: dict[str, Any], where: str, error: type[Exception]) -> dict[str, Any]:
    """A study file with ``set:`` (or ``overrides:``) under one key in its defaults and in every
    entry; both in one place raises ``error`` naming it."""
    out = dict(raw)
    if isinstance(raw.get("defaults"), dict):
        out["defaults"] = one_overrides_key(raw["defaults"], f"{where}: defaults", error)
    if isinstance(raw.get("runs"), list):
        out["runs"] = [one_overrides_key(e, f"{where}: runs[{i}]", error) if isinstance(e, dict) else e
                       for i, e in enumerate(raw["runs"])]
    return out
