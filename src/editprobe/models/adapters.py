"""Per-architecture module paths, one adapter per ``config.model_type``.

Editing code never guesses from a model's *name*: it asks the adapter registered for the
model's ``config.model_type`` where the blocks, the MLP output projection (the edited
weight) and the attention output projection live, and how that weight is oriented.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from ..errors import UserError
from ..registry import Registry


class UnsupportedModelError(UserError, ValueError):
    pass


# Module kinds an adapter can locate; the first three are model-level, the rest per block.
GLOBAL_KINDS = ("final_norm", "lm_head", "embed")
LAYER_KINDS = ("block", "mlp", "mlp_out", "attn", "attn_out")
KINDS = LAYER_KINDS + GLOBAL_KINDS


@dataclass(frozen=True)
class ModelAdapter:
    """Where things live in one architecture. Paths are relative to the causal-LM module;
    per-layer paths are relative to one block."""

    model_type: str
    layers: str  # ModuleList of blocks
    mlp: str
    mlp_out: str  # the edited weight W: R^{d_ff} -> R^d
    attn: str
    attn_out: str
    final_norm: str
    lm_head: str
    embed: str
    d_ff_attr: tuple[str, ...] = ("intermediate_size",)
    # GPT-2's Conv1D stores weights as [in, out], i.e. the MLP output projection as [d_ff, d].
    conv1d: bool = False

    # --- sizes -----------------------------------------------------------------------
    def n_layers(self, model: nn.Module) -> int:
        return len(self.block_list(model))

    def d_model(self, model: nn.Module) -> int:
        return int(model.get_input_embeddings().weight.shape[1])

    def d_ff(self, model: nn.Module) -> int:
        w = self.mlp_out_module(model, 0).weight
        return int(w.shape[0] if self.conv1d else w.shape[1])

    # --- modules ---------------------------------------------------------------------
    def block_list(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def block(self, model: nn.Module, layer: int) -> nn.Module:
        blocks = self.block_list(model)
        if not 0 <= layer < len(blocks):
            raise IndexError(f"layer {layer} outside the model's {len(blocks)} layers (0..{len(blocks) - 1})")
        return blocks[layer]

    def path(self, kind: str, layer: int | None = None) -> str:
        """Full dotted path of a module kind ('block', 'mlp', 'mlp_out', 'attn',
        'attn_out', 'final_norm', 'lm_head', 'embed')."""
        if kind not in KINDS:
            raise ValueError(f"unknown module kind {kind!r}; use one of {', '.join(KINDS)}")
        if kind in GLOBAL_KINDS:
            return getattr(self, kind)
        if layer is None:
            raise ValueError(f"module kind {kind!r} needs a layer")
        if kind == "block":
            return f"{self.layers}.{layer}"
        return f"{self.layers}.{layer}.{getattr(self, kind)}"

    def module(self, model: nn.Module, kind: str, layer: int | None = None) -> nn.Module:
        if layer is not None:
            self.block(model, layer)  # range check with a clear message
        return model.get_submodule(self.path(kind, layer))

    def check(self, model: nn.Module) -> "ModelAdapter":
        """Fail early, naming every path that does not resolve, rather than deep inside an
        edit (transformers renames modules between versions, e.g. GPT-NeoX's head)."""
        missing = []
        for kind in KINDS:
            try:
                model.get_submodule(self.path(kind, 0 if kind in LAYER_KINDS else None))
            except AttributeError:
                missing.append(f"{kind}={self.path(kind, 0)!r}")
        if missing:
            raise UnsupportedModelError(
                f"the {self.model_type!r} adapter does not fit {type(model).__name__}: no module at "
                f"{', '.join(missing)}; register a corrected ModelAdapter with register_adapter()"
            )
        # The update orientation depends on it, so a wrong flag would silently transpose edits.
        is_conv1d = type(self.mlp_out_module(model, 0)).__name__ == "Conv1D"
        if is_conv1d != self.conv1d:
            raise UnsupportedModelError(
                f"the {self.model_type!r} adapter says conv1d={self.conv1d} but {self.path('mlp_out', 0)} "
                f"is a {type(self.mlp_out_module(model, 0)).__name__}"
            )
        return self

    def mlp_out_module(self, model: nn.Module, layer: int) -> nn.Module:
        return self.module(model, "mlp_out", layer)

    # --- the edited weight, always seen as [d, d_ff] -----------------------------------
    def edit_weight(self, model: nn.Module, layer: int) -> torch.Tensor:
        """The MLP output projection's weight parameter (in its stored orientation)."""
        return self.mlp_out_module(model, layer).weight

    def to_stored(self, delta_out_in: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
        """Map an update in [d, d_ff] (out × in) orientation to the stored weight's shape."""
        d = delta_out_in.T if self.conv1d else delta_out_in
        if d.shape != stored.shape:
            raise ValueError(f"update shape {tuple(d.shape)} does not match weight {tuple(stored.shape)}")
        return d

    def to_out_in(self, stored: torch.Tensor) -> torch.Tensor:
        return stored.T if self.conv1d else stored


_LLAMA_LIKE = dict(
    layers="model.layers",
    mlp="mlp",
    mlp_out="mlp.down_proj",
    attn="self_attn",
    attn_out="self_attn.o_proj",
    final_norm="model.norm",
    lm_head="lm_head",
    embed="model.embed_tokens",
)

ADAPTERS: Registry[ModelAdapter] = Registry("model adapter", key=lambda adapter: adapter.model_type)


def register_adapter(adapter: ModelAdapter, replace: bool = False) -> ModelAdapter:
    """Add the adapter of a ``config.model_type`` (registry rules: see editprobe/registry.py)."""
    return ADAPTERS.register(adapter, replace=replace)


register_adapter(
    ModelAdapter(
        "gpt2",
        layers="transformer.h",
        mlp="mlp",
        mlp_out="mlp.c_proj",
        attn="attn",
        attn_out="attn.c_proj",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
        conv1d=True,
    )
)
register_adapter(
    ModelAdapter(
        "gptj",
        layers="transformer.h",
        mlp="mlp",
        mlp_out="mlp.fc_out",
        attn="attn",
        attn_out="attn.out_proj",
        final_norm="transformer.ln_f",
        lm_head="lm_head",
        embed="transformer.wte",
    )
)
register_adapter(
    ModelAdapter(
        "gpt_neox",
        layers="gpt_neox.layers",
        mlp="mlp",
        mlp_out="mlp.dense_4h_to_h",
        attn="attention",
        attn_out="attention.dense",
        final_norm="gpt_neox.final_layer_norm",
        lm_head="lm_head",  # `embed_out` before transformers 5
        embed="gpt_neox.embed_in",
    )
)
for _mt in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "olmo2", "phi3"):
    register_adapter(ModelAdapter(_mt, **_LLAMA_LIKE))


def get_adapter(model_or_type: nn.Module | str) -> ModelAdapter:
    """The adapter for a model (or a ``model_type`` string). Given a model, its module
    paths are checked too."""
    model_type = model_or_type if isinstance(model_or_type, str) else model_or_type.config.model_type
    try:
        adapter = ADAPTERS[model_type]
    except KeyError:
        raise UnsupportedModelError(
            f"model_type {model_type!r} has no ModelAdapter; supported: {', '.join(sorted(ADAPTERS))}. "
            "To add one, call editprobe.models.register_adapter(ModelAdapter(model_type, layers=..., "
            "mlp_out=..., ...)) with the module paths printed by print(model)."
        ) from None
    return adapter if isinstance(model_or_type, str) else adapter.check(model_or_type)
