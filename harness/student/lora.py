"""LoRA adapters in plain torch: ``W x + (alpha / rank) · B A x`` on chosen linear layers, base
weights frozen.

``B`` starts at zero, so an adapted model starts out equal to the base model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from harness.student.train import LoraConfig


class LoRALinear(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float):
        super().__init__()
        self.base = base
        self.scaling = alpha / rank
        dev, dtype = base.weight.device, base.weight.dtype
        init = torch.randn(rank, base.in_features, device=dev, dtype=dtype) / base.in_features**0.5
        self.lora_a = torch.nn.Parameter(init)
        self.lora_b = torch.nn.Parameter(
            torch.zeros(base.out_features, rank, device=dev, dtype=dtype)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Base output plus the scaled low-rank update."""
        return self.base(x) + (x @ self.lora_a.T @ self.lora_b.T) * self.scaling


def add_lora(model: torch.nn.Module, config: LoraConfig) -> list[str]:
    """Freeze the model and wrap every linear layer named in ``config.targets``; returns the wrapped
    names.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    wrapped = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if child_name in config.targets and isinstance(child, torch.nn.Linear):
                setattr(module, child_name, LoRALinear(child, config.rank, config.alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    if not wrapped:
        raise ValueError(f"no linear layers named {list(config.targets)} in the model")
    return wrapped


def lora_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The trainable adapter parameters."""
    return [p for n, p in model.named_parameters() if n.endswith(("lora_a", "lora_b"))]


def lora_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """Adapter weights by parameter name, as float32 arrays."""
    return {
        n: p.detach().cpu().float().numpy()
        for n, p in model.named_parameters()
        if n.endswith(("lora_a", "lora_b"))
    }


def load_lora(model: torch.nn.Module, config: LoraConfig, state: dict[str, Any]) -> None:
    """Wrap the model's layers and load saved adapter weights (every adapter must be present)."""
    add_lora(model, config)
    params = dict(model.named_parameters())
    missing = [n for n in params if n.endswith(("lora_a", "lora_b")) and n not in state]
    if missing:
        raise ValueError(f"adapter weights missing for {len(missing)} layers, e.g. {missing[0]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(torch.as_tensor(value, dtype=params[name].dtype))
