"""RLEdit's hypernetwork (docs/rledit.md; the official RLEdit code's ``nets.py`` read for the shapes): for
the edit modules of one weight shape, it maps a token's normalised [key; value gradient] to
a pseudo-key and a pseudo value gradient through residual low-rank blocks with a learned
scale and shift per module; per module it also learns the step size η (initialised to
``lr``) and the log ridge λ of the least-squares parameter shift (initialised to 0).
"""

from __future__ import annotations

import torch
from torch import nn


class RunningNormalizer(nn.Module):
    """Per-feature running mean and standard deviation (merged batch by batch), and the
    standardisation ``(x - mean) / (std + eps)``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("sq_dev", torch.zeros(size))  # Σ (x - mean)², merged exactly

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        x = x.float()
        n_new = x.shape[0]
        if n_new == 0:
            return
        total = self.count + n_new
        batch_mean = x.mean(0)
        delta = batch_mean - self.mean
        self.sq_dev += ((x - batch_mean) ** 2).sum(0) + delta**2 * (self.count * n_new / total).float()
        self.mean += delta * (n_new / total).float()
        self.count.copy_(total)

    @property
    def std(self) -> torch.Tensor:
        return (self.sq_dev / (self.count - 1).clamp(min=1).float()).sqrt()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / (self.std + torch.finfo(x.dtype).eps)


class ShiftBlock(nn.Module):
    """y + scale_m ⊙ relu(y A B + b) + shift_m. B starts at zero, so a fresh block is the
    identity and a fresh network passes the normalised key and gradient through."""

    def __init__(self, size: int, rank: int, n_modules: int) -> None:
        super().__init__()
        self.down = nn.Parameter(torch.randn(size, rank))
        self.up = nn.Parameter(torch.zeros(rank, size))
        self.bias = nn.Parameter(torch.zeros(size))
        self.scale = nn.Embedding(n_modules, size)
        self.shift = nn.Embedding(n_modules, size)
        nn.init.ones_(self.scale.weight)
        nn.init.zeros_(self.shift.weight)

    def forward(self, y: torch.Tensor, module: torch.Tensor) -> torch.Tensor:
        hidden = (y @ self.down @ self.up + self.bias).clamp(min=0)
        return y + self.scale(module) * hidden + self.shift(module)


class RLEditNet(nn.Module):
    def __init__(self, key_size: int, value_size: int, rank: int, n_blocks: int, n_modules: int,
                 lr: float) -> None:
        super().__init__()
        self.key_size, self.value_size = key_size, value_size
        self.normalizer = RunningNormalizer(key_size + value_size)
        self.blocks = nn.ModuleList(ShiftBlock(key_size + value_size, rank, n_modules) for _ in range(n_blocks))
        self.lr = nn.Embedding(n_modules, 1)
        self.log_ridge = nn.Embedding(n_modules, 1)
        nn.init.constant_(self.lr.weight, lr)
        nn.init.zeros_(self.log_ridge.weight)

    def forward(self, keys: torch.Tensor, grads: torch.Tensor, module: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.normalizer(torch.cat((keys, grads), -1))
        for block in self.blocks:
            hidden = block(hidden, module)
        pseudo_keys, pseudo_grads = hidden.split([self.key_size, self.value_size], -1)
        return pseudo_keys, pseudo_grads

    def value_changes(self, keys: torch.Tensor, grads: torch.Tensor, module: torch.Tensor) -> torch.Tensor:
        """Per token: −η_m (k · k̃) g̃, the change of the module's output the shift should make."""
        pseudo_keys, pseudo_grads = self(keys, grads, module)
        coeff = -self.lr(module) * (keys * pseudo_keys).sum(-1, keepdim=True)
        return coeff * pseudo_grads

    def parameter_shift(self, keys: torch.Tensor, value_changes: torch.Tensor, module: torch.Tensor) -> torch.Tensor:
        """S = (KᵀK + e^λ I)⁻¹ Kᵀ V, ``[key_size, value_size]``: the least-squares shift that
        makes K S ≈ V (in float32; differentiable in V and λ)."""
        ridge = self.log_ridge(module).exp().squeeze()
        gram = keys.T @ keys + ridge * torch.eye(self.key_size, device=keys.device, dtype=keys.dtype)
        return torch.linalg.solve(gram, keys.T @ value_changes)
