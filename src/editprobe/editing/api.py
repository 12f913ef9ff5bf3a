"""The editor contract: what a run, an ``edit`` job or a study may ask of an editor.

Every registered method (the ten LTE methods, FT, IKE, RLEdit and a user's plug-in) is an
:class:`Editor`. The run loop, the target cache and the preflight checks reach an editor only
through the members declared here, so an editor from another family (a codebook, a side
memory, another toolkit's editor behind a thin wrapper) runs beside MEMIT by meeting this
contract alone (docs/howto/add-editor.md).

Weight deltas are optional: an editor that writes weights keeps them in a
:class:`~editprobe.editing.ledger.WeightLedger` and reports them through :attr:`Editor.deltas`;
an in-context editor (IKE) has none and asks through :meth:`Editor.prompt_transform`.
"""

from __future__ import annotations

import tempfile
import zlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel

from ..data.transform import IDENTITY, PromptTransform
from ..forms import QueryForm

EditStage = Literal["positive", "negative"]


# The forms an editor's optimization sees for the fact it edits (forms.py: shared with the probes,
# which declare the forms their metrics ask). A probe of a form the editor trained on is not
# evidence that the edit generalizes to it.
TrainedForm = QueryForm


# --- seeds ---------------------------------------------------------------------------------------
# The tag mixed into a derived seed: the field's name, except the templates' (runs with a seed
# other than 0 made before other fields followed the run's seed keep their templates).
_SEED_TAGS = {"template_seed": "templates"}


def run_seeded(run_seed: int, own_seed: int, field: str) -> int:
    """A settings seed (``field`` = ``own_seed``) in a run with seed ``run_seed``: ``own_seed``
    itself at run seed 0 (so every run made before seeds varied it is unchanged), otherwise a
    stable mix of both (crc32, not hash(): that one is salted per process)."""
    if run_seed == 0:
        return own_seed
    return zlib.crc32(f"{_SEED_TAGS.get(field, field)}:{run_seed}:{own_seed}".encode())


# --- what one batch reports --------------------------------------------------------------------
class RequestReport(BaseModel):
    id: str
    loss: float
    target_prob: float
    steps: int


class LayerReport(BaseModel):
    layer: int
    residual_norm: float  # mean ‖r_j‖ over requests before this layer's update
    update_norm: float  # Frobenius norm of this layer's update


class EditReport(BaseModel):
    method: str
    batch: int
    n_requests: int
    requests: list[RequestReport]
    layers: list[LayerReport]
    timings: dict[str, float]


@dataclass(frozen=True)
class RemoteCheck:
    """Something an editor will fetch over the network that preflight must find reachable
    before any work starts (e.g. a C0 corpus whose statistics are not cached yet)."""

    what: str  # e.g. "C0 corpus wikipedia"
    check: Callable[[], None]  # raises a UserError with one line saying what to do


class Editor(ABC):
    """The contract every method meets. Class-level facts first (read without building an
    editor), then the life of an editor: ``prepare`` once, ``apply`` per batch (edits
    accumulate), ``finalize`` once after the last batch, ``restore`` to the unedited model;
    ``save_state``/``load_state`` checkpoint it.

    A subclass sets ``name`` and ``hparams_cls`` and implements the abstract methods; the
    rest has defaults that fit an editor with no weights, no statistics and no cache.
    ``METHODS`` (editing/plugins.py) refuses a class that does not (docs/howto/add-editor.md).
    ``make_editor`` builds one as ``cls(model, tokenizer, hparams, **kwargs)``: a run and an
    ``edit`` job pass ``model_id``, callers of the LTE engine its statistics store and corpus.

    Examples:
        The life of an editor (fine-tuning on a tiny random Llama): edit, checkpoint,
        undo, and reload the checkpoint on the unedited model.

        >>> from editprobe.data import load_records
        >>> from editprobe.editing import make_editor
        >>> from editprobe.models.tiny import tiny_model
        >>> model, tokenizer, adapter = tiny_model("llama")
        >>> records = load_records("counterfact-sample", limit=2).records
        >>> editor = make_editor("ft", model, tokenizer, "tiny")
        >>> editor.prepare()
        >>> report = editor.apply([r.request() for r in records])
        >>> report.method, report.n_requests
        ('ft', 2)
        >>> edited = {name: p.clone() for name, p in model.named_parameters()}
        >>> editor.save_state("state")  # doctest: +ELLIPSIS
        PosixPath('state...')
        >>> editor.restore()
        >>> editor.load_state("state")
        >>> all((p == edited[name]).all() for name, p in model.named_parameters())
        True
        >>> sorted(form.value for form in editor.trained_forms())
        ['negated', 'positive', 'prefixed']
    """

    name: ClassVar[str]  # what --method and make_editor take
    hparams_cls: ClassVar[type[BaseModel]]  # its settings: a pydantic model with ``check_model(n_layers)``
    # The edit stages of a run this editor takes part in: its positive requests, and the
    # negated ones when a probe needs them (RLEdit: positive only, as the paper reports it).
    edit_stages: ClassVar[tuple[EditStage, ...]] = ("positive", "negative")
    # Whether ``preserve_previous`` (K_p K_pᵀ, the keys of earlier batches) means anything
    # to this editor; tables print K_p only where it does. Such an editor's settings declare
    # the field (a run hands its K_p switch only to the methods whose settings have it).
    uses_preserved_keys: ClassVar[bool] = False
    # Whether the editor reads second-moment statistics (C0) of a corpus: a class attribute,
    # or a property where the settings decide (ROME's mom2_adjustment, AdaEdit's use_covariance).
    needs_covariance: bool = False
    # The query forms the editor's optimization sees whatever its settings; ``trained_forms()``
    # adds those its settings switch on. Empty for an editor that trains nothing (IKE).
    trains_on: ClassVar[frozenset[TrainedForm]] = frozenset({TrainedForm.POSITIVE})
    # The settings fields seeding the editor's own random choices that a user expects to vary
    # with the run's seed (docs/protocol.md#seeds); ``run_seeded_hparams`` derives them. LTE
    # and FT: the context templates; IKE: its demonstrations. A field its settings lack is
    # passed over.
    seed_fields: ClassVar[tuple[str, ...]] = ("template_seed",)
    # Whether the edited model's weights hold the whole edit, so that saving them as a
    # checkpoint (``edit --save-model``, a run's ``save_model``) and reloading it gives the
    # edited model back. False for an editor whose edit lives elsewhere: IKE's prompt, a
    # codebook or a side memory consulted by hooks in the forward (GRACE, WISE).
    edit_in_weights: ClassVar[bool] = True

    hp: BaseModel  # the validated hyperparameters (an instance of ``hparams_cls``)

    # --- the life of an editor ------------------------------------------------------------------
    def prepare(self) -> None:
        """Compute what the first batch needs (statistics, templates, demonstrations).

        Called once on the unedited model, before the first ``apply`` and before
        ``load_state`` on resume. Nothing by default.
        """

    @abstractmethod
    def apply(self, requests: list) -> EditReport:
        """Edit one batch; the edits of earlier batches stay (sequential editing).

        Args:
            requests: The batch: :class:`~editprobe.data.EditRequest` objects
                (``record.request()``) or request dicts with the same fields.

        Returns:
            What the batch did: per request its loss, target probability and steps, per
            layer the update's norm, and timings.

        Raises:
            UserError: The batch is empty or a request is malformed (one line). A batch that
                fails for any reason is rolled back before the error leaves.
        """

    def finalize(self) -> dict:
        """Once after the last batch (PRUNE restrains the accumulated edit); idempotent.

        Returns:
            What the step did, for the run's record (empty by default).
        """
        return {}

    @property
    def has_final_step(self) -> bool:
        """Whether ``finalize`` changes the edited model (PRUNE in its ``final`` mode): an
        evaluation between batches then measures a finalized snapshot (:meth:`finalized_view`)."""
        return False

    @contextmanager
    def finalized_view(self):
        """The edited model as if the edits ended here, for an evaluation between batches (a
        curve point, docs/curves.md); on leaving, the running state is back bit for bit (saved
        with ``save_state`` and reloaded), so later batches edit as if nothing was asked. A
        no-op for an editor without a final step."""
        if not self.has_final_step:
            yield self
            return
        with tempfile.TemporaryDirectory(prefix="editprobe-view-") as saved:
            self.save_state(saved, include_stats=False)
            try:
                self.finalize()
                yield self
            finally:
                self.restore()
                self.load_state(saved)

    @abstractmethod
    def restore(self) -> None:
        """Back to the unedited model, bit for bit; the edits are forgotten (prepared
        statistics are kept, so the editor can edit again without recomputing them)."""

    @abstractmethod
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """Write the edits (atomically) so that ``load_state`` on a fresh editor of the same
        unedited model reproduces them bit for bit.

        Args:
            directory: Where to write (created, or replaced as a whole).
            include_stats: False leaves out what a cache already holds (C0).

        Returns:
            The directory written.
        """

    @abstractmethod
    def load_state(self, directory: str | Path) -> None:
        """Re-apply a saved state to this editor's unedited model.

        Args:
            directory: What ``save_state`` wrote, for the same unedited model and settings.

        Raises:
            UserError: The directory holds no readable state, or one this editor cannot
                take (e.g. other edit layers).
        """

    # --- how the edited model is asked --------------------------------------------------------
    def prompt_transform(self) -> PromptTransform:
        """What every probe asks through: the identity for editors that write weights.

        Returns:
            The transform every query passes through before the model sees it (IKE puts its
            demonstrations and the edited facts into the prompt).
        """
        return IDENTITY

    # --- what the run records -------------------------------------------------------------------
    def trained_forms(self) -> frozenset[TrainedForm]:
        """The query forms this editor, with its settings, trains on (``trains_on`` unless a
        setting adds one, e.g. LTE's ``negation: defend`` the negated form).

        Returns:
            The forms; a probe of one of them (other than the edited prompt) is marked in
            every table, as it is no evidence that the edit generalizes to it.
        """
        return self.trains_on

    def variant(self) -> str | None:
        """A short label for a non-default mode (e.g. "defend"), shown beside the name."""
        return None

    @property
    def deltas(self) -> Mapping[Any, torch.Tensor]:
        """The accumulated weight updates (fp32), keyed by layer or parameter; empty for an
        editor that writes no weights."""
        return {}

    def c0_info(self) -> dict | None:
        """Which corpus C0 came from and how many documents it read; None without C0."""
        return None

    def provenance(self) -> dict[str, Any]:
        """What a run records of this editor beside its numbers: its settings (``hparams``),
        its ``variant`` and, for an editor that reads C0, the corpus and documents (``c0``)."""
        return {"hparams": self.hp.model_dump(mode="json"), "variant": self.variant(),
                "c0": self.c0_info() if self.needs_covariance else None}

    @classmethod
    def run_seeded_hparams(cls, hparams: BaseModel, run_seed: int) -> BaseModel:
        """``hparams`` with each of ``seed_fields`` derived from the run's seed
        (:func:`run_seeded`): at run seed 0 the settings themselves."""
        update = {field: run_seeded(run_seed, getattr(hparams, field), field)
                  for field in cls.seed_fields if field in type(hparams).model_fields}
        return hparams.model_copy(update=update) if update and run_seed else hparams

    # --- what preflight must reach, what a cache may hold --------------------------------------
    @classmethod
    def covariance_needed(cls, hparams: BaseModel) -> bool:
        """``needs_covariance`` of an editor with these settings (ROME and AdaEdit read C0 only
        under some), answered without building one."""
        return bool(cls.needs_covariance)

    @classmethod
    def requirements(cls, hparams: BaseModel, model, tokenizer, model_id: str) -> list[RemoteCheck]:
        """What an editor of these settings will fetch, known before one is built: a run checks
        it right after the model loads, before any work (none by default)."""
        return []

    @classmethod
    def check_records(cls, hparams: BaseModel, records: list) -> None:
        """Refuse, in one line (a UserError), the records a run will edit and evaluate before
        any work, when they clash with data the editor trains on (WISE: its irrelevant
        prompts must share no subject with them). Nothing by default."""

    def remote_requirements(self) -> list[RemoteCheck]:
        """What this editor will fetch that preflight must find reachable (none by default)."""
        return []

    def attach_target_cache(self, cache: Any) -> bool:
        """Give the editor a target cache (editing/lte/target_cache.py); False when it optimizes
        no target vectors and so has nothing to cache."""
        return False
