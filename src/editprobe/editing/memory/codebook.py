"""GRACE's codebook (docs/grace.md): keys, values, deferral radii and the target each key was
trained for, and the routing that a forward hook on the adapted module applies.

Routing is per decoding step: GRACE (Hartvigsen et al., 2023) checks the last token of the
input, so a position whose module input lies within the radius of its nearest key gets that
key's value only where it is the last token of a step (models/decoding.py): a prompt's last
real token, and in a teacher-forced pass over query + target (how the probes score) every
position from the query's last token on. A prompt that merely contains an edit prompt
("X is not" contains "X is") is not answered from the key at its inner position. A pad
position may be replaced, but no real token attends to it and nobody reads its logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..lte.state import StateError

# The conflict rules of GRACE's Algorithm 1 (what a new edit does to the codebook).
Placement = Literal["added", "expanded", "split", "covered"]


@dataclass
class Codebook:
    """The keys (module inputs at an edit prompt's last token), the values (module outputs
    trained to give the target), each key's deferral radius, and the target ids it was
    trained for (same target → expand, another → split). All fp32, on the model's device."""

    keys: torch.Tensor  # (n, d_in)
    values: torch.Tensor  # (n, d_out)
    radii: torch.Tensor  # (n,)
    targets: list[tuple[int, ...]] = field(default_factory=list)
    edit_ids: list[str] = field(default_factory=list)  # the request that made each key

    @classmethod
    def empty(cls, d_in: int, d_out: int, device) -> "Codebook":
        zeros = partial_zeros(device)
        return cls(zeros(0, d_in), zeros(0, d_out), zeros(0))

    def __len__(self) -> int:
        return self.keys.shape[0]

    def clone(self) -> "Codebook":
        return Codebook(self.keys.clone(), self.values.clone(), self.radii.clone(), list(self.targets),
                        list(self.edit_ids))

    # --- placing a new edit (GRACE, Algorithm 1) ----------------------------------------------
    def place(self, key: torch.Tensor, value: torch.Tensor, target: tuple[int, ...], edit_id: str,
              epsilon: float, expand: str) -> tuple[int, Placement]:
        """Put the edit with ``key`` into the codebook; returns the entry whose value then
        answers it and what happened. No key near (its ball with radius ``epsilon`` meets no
        other ball): a new entry. Near a key with the same target: that entry answers, its
        radius grows to reach the new key (``coverage``; ``moving_average`` also moves the key
        halfway). Near a key with another target: a new entry, and both radii become half
        their distance, so the two balls no longer overlap."""
        key = key.float()
        if len(self):
            dist, nearest = torch.linalg.vector_norm(self.keys - key, dim=1).min(0)
            d, j = float(dist), int(nearest)
            if d <= epsilon + float(self.radii[j]):
                if self.targets[j] == target:
                    if d <= float(self.radii[j]):
                        return j, "covered"
                    if expand == "moving_average":
                        self.keys[j] = 0.5 * (self.keys[j] + key)
                    self.radii[j] = d
                    return j, "expanded"
                new = self._append(key, value, epsilon, target, edit_id)
                self.radii[j] = self.radii[new] = d / 2
                return new, "split"
        return self._append(key, value, epsilon, target, edit_id), "added"

    def _append(self, key, value, radius: float, target, edit_id: str) -> int:
        self.keys = torch.cat([self.keys, key[None]])
        self.values = torch.cat([self.values, value.float()[None]])
        self.radii = torch.cat([self.radii, self.radii.new_tensor([radius])])
        self.targets.append(tuple(target))
        self.edit_ids.append(edit_id)
        return len(self) - 1

    # --- routing ---------------------------------------------------------------------------
    def nearest(self, inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For each row of ``inputs`` (N, d_in): the distance to its nearest key and that key's
        index. Exact pairwise distances (not the ‖a‖²−2ab+‖b‖² shortcut, whose cancellation
        errors could move a query across a radius)."""
        dist = torch.cdist(inputs.float(), self.keys, compute_mode="donot_use_mm_for_euclid_dist")
        return dist.min(1)

    def route(self, inputs: torch.Tensor, output: torch.Tensor, eligible: torch.Tensor | None = None,
              values: torch.Tensor | None = None,
              forced: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor | None:
        """The module's output with each ``eligible`` position (flat booleans; None: all) inside
        a key's radius replaced by that key's value; None where no position is (the output
        stays the very tensor the module made). ``values``: the values to use (while
        training, with the trained ones in place); ``forced``: (flat positions, entries) that
        take those entries' values whatever the distance (the edit prompts' own positions
        while their values are trained)."""
        if not len(self):
            return None
        values = self.values if values is None else values
        flat_in = inputs.reshape(-1, inputs.shape[-1])
        if eligible is not None and not bool(eligible.any()) and forced is None:
            return None
        dist, nearest = self.nearest(flat_in)
        hit = dist <= self.radii[nearest]
        if eligible is not None:
            hit = hit & eligible
        if forced is not None:
            hit = hit.index_fill(0, forced[0], True)
            nearest = nearest.index_put((forced[0],), forced[1])
        if not bool(hit.any()):
            return None
        flat_out = output.reshape(-1, output.shape[-1])
        replaced = torch.where(hit[:, None], values[nearest].to(flat_out.dtype), flat_out)
        return replaced.view_as(output)

    # --- state -----------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """What save_state writes (safetensors): the targets' ids padded with −1."""
        width = max((len(t) for t in self.targets), default=0)
        ids = torch.full((len(self), width), -1, dtype=torch.long)
        for i, t in enumerate(self.targets):
            ids[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        return {"keys": self.keys.cpu().contiguous(), "values": self.values.cpu().contiguous(),
                "radii": self.radii.cpu().contiguous(), "target_ids": ids}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], edit_ids: list[str], device) -> "Codebook":
        targets = [tuple(int(x) for x in row if x >= 0) for row in tensors["target_ids"]]
        n = tensors["keys"].shape[0]
        if not (tensors["values"].shape[0] == tensors["radii"].shape[0] == len(targets) == len(edit_ids) == n):
            raise StateError("grace codebook state: keys, values, radii, targets and edit ids differ in number")
        return cls(tensors["keys"].float().to(device), tensors["values"].float().to(device),
                   tensors["radii"].float().to(device), targets, list(edit_ids))


def partial_zeros(device):
    return lambda *shape: torch.zeros(*shape, dtype=torch.float32, device=device)
