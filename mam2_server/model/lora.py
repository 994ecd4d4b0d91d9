"""LoRA for the SAM2 image encoder: low-rank adapters on attention `qkv` / `proj` Linear layers.

`LoRALinear` *is* an `nn.Linear` (its `weight` / `bias` keep their names, so official
SAM2 checkpoints load unchanged) with two extra parameters `lora_A` [r, in] and
`lora_B` [out, r]; y = x W^T + b + (alpha / r) * x A^T B^T. `lora_B` starts at zero, so
a freshly injected adapter changes nothing. `merge()` folds the update into `weight`
for inference (identical outputs up to float rounding) and `unmerge()` undoes it.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from mam2_server.model.config import LoRAConfig

__all__ = ["LoRALinear", "inject_lora", "merge_lora", "unmerge_lora", "lora_parameters"]


class LoRALinear(nn.Linear):
    """nn.Linear + a rank-`rank` update. Input [..., in_features] -> [..., out_features]."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {rank}")
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.merged = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, *, rank: int, alpha: float) -> "LoRALinear":
        new = cls(linear.in_features, linear.out_features, rank=rank, alpha=alpha, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(linear.weight)
            if linear.bias is not None:
                new.bias.copy_(linear.bias)
        new.weight.requires_grad_(linear.weight.requires_grad)
        return new

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)
        if self.merged:
            return y
        return y + F.linear(F.linear(x, self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        if not self.merged:
            self.weight += self.delta_weight().to(self.weight.dtype)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.weight -= self.delta_weight().to(self.weight.dtype)
            self.merged = False

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scaling={self.scaling:g}, merged={self.merged}"


def inject_lora(module: nn.Module, config: LoRAConfig) -> list[str]:
    """Replace every nn.Linear whose attribute name is in `config.targets` under `module`.

    Returns the qualified names replaced. Rank 0 does nothing.
    """
    if config.rank <= 0:
        return []
    replaced = []
    for parent_name, parent in list(module.named_modules()):
        for attr in config.targets:
            child = getattr(parent, attr, None)
            if isinstance(child, nn.Linear) and not isinstance(child, LoRALinear):
                setattr(parent, attr, LoRALinear.from_linear(child, rank=config.rank, alpha=config.alpha))
                replaced.append(f"{parent_name}.{attr}" if parent_name else attr)
    return replaced


def merge_lora(module: nn.Module) -> int:
    """Fold every adapter under `module` into its weight; returns how many were merged."""
    layers = [m for m in module.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(module: nn.Module) -> int:
    layers = [m for m in module.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.unmerge()
    return len(layers)


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if n.rsplit(".", 1)[-1] in ("lora_A", "lora_B")]
