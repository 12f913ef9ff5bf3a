"""RLEdit's trained part: one :class:`RLEditNet` per edit-module shape, its settings, and
saving/loading as safetensors + JSON (never pickle)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ...errors import UserError, one_line
from ...jsontext import dumps
from ...paths import atomic_path
from .net import RLEditNet

HYPERNET_VERSION = 1


class HypernetError(UserError, ValueError):
    pass


class RLEditSettings(BaseModel):
    """What the hypernetwork edits and how it is trained (RLEdit's ``config/editor/rledit.yaml``
    values as defaults; the modules are a model's, e.g. Llama-3-8B: gate/up of layers 22-30)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: list[int]
    modules: list[str] = ["mlp.gate_proj", "mlp.up_proj"]  # relative to a block
    rank: int = Field(1024, ge=1)
    n_blocks: int = Field(4, ge=1)
    lr: float = 1e-6  # η's initial value
    meta_lr: float = 1e-5
    loc_coef: float = 0.6
    reg_coef: float = 1e-4
    time_decay: float = 0.95
    back_depth: int = Field(10, ge=1)
    max_grad_norm: float = 1.0
    # How the gradient between optimizer steps is formed (docs/rledit.md, "Gradient handling").
    # reference (RLEdit's code): after every batch the accumulated gradient is clipped to
    # max_grad_norm, and the L2 term on the shifts adds to the loss but no gradient (the shifts
    # it reads carry none). summed (editprobe before this setting): the batches' gradients summed,
    # clipped once before the optimizer step, and the L2 term's gradient 2·reg_coef·S included.
    grad_handling: Literal["reference", "summed"] = "reference"
    seed: int = 0
    # the training sequence: RLEdit's num_seq batches of n_edits, one optimizer step per
    # ``update_every`` batches (None: one step for the whole sequence, as RLEdit's code)
    n_steps: int = Field(400, ge=1)
    batch_size: int = Field(20, ge=1)
    update_every: int | None = Field(None, ge=1)


class Hypernetwork(nn.Module):
    def __init__(self, settings: RLEditSettings, shapes: dict[str, tuple[int, int]]) -> None:
        """``shapes``: {module name: (d_in, d_out)} of the edit modules, in a fixed order."""
        super().__init__()
        torch.manual_seed(settings.seed)
        self.settings = settings
        self.shapes = dict(shapes)
        by_shape: dict[str, int] = {}
        self.module_index: dict[str, int] = {}
        for name, (d_in, d_out) in self.shapes.items():
            key = f"{d_in}x{d_out}"
            self.module_index[name] = by_shape.get(key, 0)
            by_shape[key] = self.module_index[name] + 1
        self.nets = nn.ModuleDict({
            key: RLEditNet(*map(int, key.split("x")), settings.rank, settings.n_blocks, count, settings.lr)
            for key, count in by_shape.items()
        })

    def net_of(self, name: str) -> tuple[RLEditNet, torch.Tensor]:
        d_in, d_out = self.shapes[name]
        net = self.nets[f"{d_in}x{d_out}"]
        return net, torch.tensor(self.module_index[name], device=net.lr.weight.device)

    def shift(self, name: str, keys: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The parameter shift S ``[d_in, d_out]`` of one module for these keys and gradients."""
        net, index = self.net_of(name)
        return net.parameter_shift(keys, net.value_changes(keys, grads, index), index)

    # --- files --------------------------------------------------------------------------------
    def save(self, directory: str | Path, meta: dict | None = None) -> Path:
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()},
                      tmp / "hypernet.safetensors")
            (tmp / "hypernet.json").write_text(dumps({
                "version": HYPERNET_VERSION, "settings": self.settings.model_dump(mode="json"),
                "shapes": {k: list(v) for k, v in self.shapes.items()}, **(meta or {})},
                directory / "hypernet.json", indent=2))
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> tuple["Hypernetwork", dict]:
        """The network saved in ``directory``; HypernetError (one line) when it is missing,
        truncated, of another format, or its tensors do not fit its settings or hold NaN."""
        directory = Path(directory)

        def broken(reason: object) -> HypernetError:
            return HypernetError(f"{directory}: not a trained RLEdit hypernetwork ({one_line(reason)[:300]})")

        try:
            meta = json.loads((directory / "hypernet.json").read_text())
            tensors = load_file(directory / "hypernet.safetensors")
        except (OSError, ValueError, SafetensorError) as exc:
            raise broken(exc) from None
        if not isinstance(meta, dict):
            raise broken("hypernet.json is not an object")
        if meta.get("version") != HYPERNET_VERSION:
            raise HypernetError(f"{directory}: hypernetwork format {meta.get('version')}, this version reads "
                                f"{HYPERNET_VERSION}")
        try:
            net = cls(RLEditSettings.model_validate(_settings_as_trained(meta["settings"])),
                      {k: tuple(v) for k, v in meta["shapes"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise broken(f"hypernet.json: {type(exc).__name__}: {exc}") from None
        try:
            net.load_state_dict(tensors)
        except RuntimeError:
            raise broken("its tensors do not fit the settings and shapes in hypernet.json") from None
        bad = next((k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise broken(f"tensor {bad} holds NaN or inf")
        return net, meta


def _settings_as_trained(saved: object) -> object:
    """A network saved before ``grad_handling`` existed was trained with the summed handling:
    read it so (the default, reference, would misstate how it was trained)."""
    if isinstance(saved, dict) and "grad_handling" not in saved:
        return {**saved, "grad_handling": "summed"}
    return saved


SETTINGS_DIR = Path(__file__).parent / "settings"


def resolve_settings(model_key_or_path: str, name: str | None = None, overrides: dict | None = None) -> RLEditSettings:
    """Named settings from ``settings/<model key>.yaml`` (or a YAML path): ``name`` (default:
    ``reduced`` where the file has one, else ``reference``), with single fields overridden."""
    import yaml
    from pydantic import ValidationError

    from ...errors import validation_message
    from ...yamlio import load_yaml

    path = Path(model_key_or_path)
    if not (path.suffix in (".yaml", ".yml") or path.exists()):
        path = SETTINGS_DIR / f"{model_key_or_path}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in SETTINGS_DIR.glob("*.yaml")))
            raise HypernetError(f"no RLEdit settings for {model_key_or_path!r} (shipped: {known}); pass --hparams FILE.yaml")
    try:
        named = load_yaml(path) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HypernetError(f"{path}: cannot read RLEdit settings: {exc}") from None
    name = name or ("reduced" if "reduced" in named else "reference")
    if name not in named:
        raise HypernetError(f"{path}: no setting {name!r} (it has: {', '.join(named)})")
    try:
        return RLEditSettings.model_validate({**named[name], **(overrides or {})})
    except ValidationError as exc:
        where, message = validation_message(exc)
        raise HypernetError(f"{path} [{name}]: field {where!r}: {message}") from None
