"""What every task shares: AdamW with decay on matrices only, warmup + cosine schedule."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from lit_llm.errors import ConfigError


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    # 0 = use the trainer's total number of optimizer steps (max_steps, or epochs x batches).
    decay_steps: int = 0

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)  # OmegaConf ListConfig -> tuple
        if self.lr <= 0:
            raise ConfigError(f"task.optim.lr={self.lr} must be > 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"task.optim.warmup_steps={self.warmup_steps} must be >= 0")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"task.optim.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: weight decay on matrices (linear weights, embeddings), none on biases
    and LayerNorm gains, as in GPT-2/nanoGPT. Tied parameters appear once."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():  # named_parameters() de-duplicates tied weights
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """LR multiplier: linear warmup from 1/warmup to 1, then cosine down to min_lr_ratio at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, optim: OptimConfig, total_steps: int) -> dict:
    """Lightning's `configure_optimizers` return value: AdamW + per-step LambdaLR."""
    opt = torch.optim.AdamW(
        param_groups(model, optim.weight_decay), lr=optim.lr, betas=optim.betas, eps=optim.eps
    )
    total = optim.decay_steps or total_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_cosine(s, optim.warmup_steps, total, optim.min_lr_ratio)
    )
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}
