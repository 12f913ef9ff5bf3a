"""Context templates: short random prefixes sampled from the model being edited, so keys
and targets are averaged/optimized across contexts (docs/engine.md, Context templates).

Generated once per editor, seeded, decoded without special tokens (a Llama prefix
decoded with them would carry a second BOS), and saved with the editor state. A run's seed
reaches them through :func:`run_template_seed` (docs/protocol.md#seeds).
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict

from ...models.tokens import make_batch
from ..api import run_seeded


class TemplateSpec(BaseModel):
    """``groups``: (max_len_tokens, n_generations) per group of generated prefixes; the bare
    ``"{}"`` always comes first. ``flat``: average keys over all templates at once (ROME)
    instead of the two-level mean over groups (MEMIT family)."""

    model_config = ConfigDict(frozen=True)

    groups: tuple[tuple[int, int], ...] = ((10, 5),)
    flat: bool = False
    seed_words: tuple[str, ...] = ("The", "Therefore", "Because", "I", "You")
    top_k: int = 5
    temperature: float = 1.0  # NAMET samples at 0.5 (with top-k 100)


class ContextTemplates(BaseModel):
    """Groups of templates, each with one ``{}`` where the prompt goes; group 0 is ``["{}"]``."""

    model_config = ConfigDict(frozen=True)

    groups: tuple[tuple[str, ...], ...]
    flat: bool = False

    @property
    def all(self) -> list[str]:
        return [t for g in self.groups for t in g]

    def weights(self) -> list[float]:
        """Per-template weights giving the mean the method asks for (flat or two-level)."""
        if self.flat:
            n = len(self.all)
            return [1.0 / n] * n
        return [1.0 / (len(self.groups) * len(g)) for g in self.groups for _ in g]


def run_template_seed(run_seed: int, template_seed: int) -> int:
    """The templates' seed in a run with seed ``run_seed``: the method's ``template_seed`` itself
    at run seed 0 (so runs made before seeds varied the templates keep theirs), otherwise a
    stable mix of both (``editing/api.run_seeded``)."""
    return run_seeded(run_seed, template_seed, "template_seed")


def _clean(text: str) -> str:
    # A brace in a prefix would break str.format later.
    return text.replace("{", " ").replace("}", " ").strip()


@torch.no_grad()
def generate_templates(model, tok, spec: TemplateSpec, seed: int = 0) -> ContextTemplates:
    """Sample the prefixes from ``model`` (top-k), reproducibly for a given seed."""
    device = next(model.parameters()).device
    groups: list[tuple[str, ...]] = [("{}",)]
    word_ids = [tok(w, add_special_tokens=True)["input_ids"] for w in spec.seed_words]
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for max_len, n_gen in spec.groups:
            per_word = max(1, n_gen // len(spec.seed_words))
            seqs = [ids for ids in word_ids for _ in range(per_word)][:n_gen]
            batch = make_batch(tok, seqs, padding_side="left").to(device)
            new_tokens = max(1, max_len - min(len(s) for s in seqs))
            out = model.generate(
                input_ids=batch.input_ids,
                attention_mask=batch.attention_mask,
                do_sample=True,
                top_k=spec.top_k,
                top_p=1.0,
                temperature=spec.temperature,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tok.pad_token_id,
                use_cache=True,
            )
            texts = tok.batch_decode(out, skip_special_tokens=True)
            groups.append(tuple(_clean(t) + ". {}" for t in texts))
    if spec.flat:
        return ContextTemplates(groups=(tuple(t for g in groups for t in g),), flat=True)
    return ContextTemplates(groups=tuple(groups), flat=False)
