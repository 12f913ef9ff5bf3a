"""What a run tells the user beside its results: the advice after a failure (whether
``--resume`` can help) and the warning about records' negated prompts it cannot edit."""

from __future__ import annotations

from ..errors import EditFailedError


def unanchored_warning(spec: str, plan) -> str | None:
    """One line when records' own negated prompts lack their subject: asked (PN), not edited."""
    n = plan.n_not_editable
    if not n:
        return None
    first = next(item for item in plan.items if not item.editable)
    return (f"{spec}: {n} of {plan.n_records} records have a negated prompt without their subject (e.g. record "
            f"{first.record.id}: {first.record.negated_prompt!r}): their negated query is asked (PN), their negated "
            f"edit skipped (NN and NP over the other {plan.n_records - n})")


def resume_advice(exc: BaseException, out) -> str:
    """What to say about the work a failed run kept: ``--resume`` only where resuming can
    help, after a failure of the machine or its surroundings (a full disk, device memory, the
    network); any other failure follows from the settings and the data, which a resumed run
    must keep, so it would come again (a numerically failed batch, a bad record or hparam)."""
    if resumable(exc):
        return f"the work done is kept: editprobe run --out {out} --resume continues it"
    if isinstance(exc, EditFailedError):
        return (f"the work done is kept in {out}, but --resume would repeat the failed batch under the same "
                "settings: change them in a new run")
    return f"the work done is kept in {out}, but --resume would meet this error again: fix it in a new run"


def resumable(exc: BaseException) -> bool:
    """Whether a failure can pass once its cause outside the run is fixed (see resume_advice)."""
    from ..data.corpus import CorpusUnavailableError
    from ..errors import DeviceError, ModelReferenceError, OutputError
    from ..locks import LockHeldError
    from ..models.builtin import BuiltinModelError

    return isinstance(exc, (OutputError, DeviceError, CorpusUnavailableError, ModelReferenceError,
                            BuiltinModelError, LockHeldError))
