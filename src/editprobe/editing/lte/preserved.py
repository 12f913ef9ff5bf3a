"""K_p K_pᵀ, the preserved keys of earlier batches, and what a checkpoint stores of it.

The matrix is d_ff² float64 per edit layer (1.6 GB at d_ff = 14336); the keys it was summed
from are d_ff × 4 bytes per edit. So a state stores the keys added since a stored base and
rebuilds the matrix by replaying the same additions in the same order, which gives the
running matrix bit for bit. Once the keys would take as much room as the matrix, the
matrix itself becomes the base and the keys are dropped ("fold"): a state is never larger
than the matrix alone.
"""

from __future__ import annotations

import torch

DTYPE = torch.float64  # the sum runs over thousands of outer products


def _outer(keys: torch.Tensor) -> torch.Tensor:
    k64 = keys.to(DTYPE)  # a fresh, aligned tensor: the product does not depend on where keys came from
    return k64 @ k64.T


class PreservedKeys:
    """Per layer: the matrix, its base (None until a fold) and the keys added since.

    Tensors and lists are replaced, never changed in place, so :meth:`copy` (a rollback
    snapshot) shares them instead of cloning."""

    def __init__(self) -> None:
        self._matrix: dict[int, torch.Tensor] = {}
        self._base: dict[int, torch.Tensor] = {}
        self._keys: dict[int, list[torch.Tensor]] = {}

    def __contains__(self, layer: int) -> bool:
        return layer in self._matrix

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self._matrix[layer]

    def __len__(self) -> int:
        return len(self._matrix)

    def layers(self) -> list[int]:
        return sorted(self._matrix)

    def keys(self, layer: int) -> list[torch.Tensor]:
        """The keys ``[d_ff, n_b]`` added to ``layer`` since its base, oldest first."""
        return list(self._keys.get(layer, []))

    def base(self, layer: int) -> torch.Tensor | None:
        return self._base.get(layer)

    def copy(self) -> PreservedKeys:
        out = PreservedKeys()
        out._matrix, out._base, out._keys = dict(self._matrix), dict(self._base), dict(self._keys)
        return out

    def add(self, layer: int, keys: torch.Tensor) -> None:
        """Add ``keys [d_ff, n]`` (kept on the CPU in their own dtype) to ``layer``."""
        k = keys.detach().to("cpu").contiguous()  # contiguous: the replay multiplies the same layout
        self._append(layer, k)
        stored = sum(t.nbytes for t in self._keys[layer]) + (self._base[layer].nbytes if layer in self._base else 0)
        if stored >= self._matrix[layer].nbytes:
            self._base[layer], self._keys[layer] = self._matrix[layer], []

    def _append(self, layer: int, k: torch.Tensor) -> None:
        previous = self._matrix.get(layer)
        if previous is None:
            previous = self._base.get(layer, torch.zeros(k.shape[0], k.shape[0], dtype=DTYPE))
        self._matrix[layer] = previous + _outer(k)
        self._keys[layer] = self._keys.get(layer, []) + [k]  # a new list: snapshots keep theirs

    # --- saving -------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """``cpbase.<layer>`` (only after a fold) and ``cpkeys.<layer>.<i>``, for safetensors."""
        out = {f"cpbase.{l}": b.contiguous() for l, b in self._base.items()}
        for layer, keys in self._keys.items():
            out.update({f"cpkeys.{layer}.{i}": k for i, k in enumerate(keys)})
        return out

    def meta(self) -> dict[str, dict]:
        """Per layer, whether there is a base and how many key tensors follow it (state.json)."""
        return {str(l): {"base": l in self._base, "keys": len(self._keys.get(l, []))} for l in self.layers()}

    @classmethod
    def from_saved(cls, meta: dict[str, dict], tensors: dict[str, torch.Tensor]) -> PreservedKeys:
        """Rebuild from :meth:`meta` and :meth:`tensors`, replaying the additions in order.
        A missing tensor raises KeyError naming it."""
        out = cls()
        for name, entry in sorted(meta.items(), key=lambda item: int(item[0])):
            layer = int(name)
            if entry["base"]:
                out._base[layer] = tensors[f"cpbase.{layer}"]
                out._matrix[layer] = out._base[layer]
            out._keys[layer] = []
            for i in range(entry["keys"]):
                out._append(layer, tensors[f"cpkeys.{layer}.{i}"])
        return out

    @classmethod
    def from_matrices(cls, matrices: dict[int, torch.Tensor]) -> PreservedKeys:
        """State version 1 stored only the matrices: each becomes a base (the next addition
        folds, so a saved state stays the size of a version-1 one)."""
        out = cls()
        out._base, out._matrix = dict(matrices), dict(matrices)
        out._keys = {l: [] for l in matrices}
        return out
