"""AdamW and the learning-rate schedules of the DeepSeek LLM report (section 2.3).

AdamW with beta1 0.9, beta2 0.95, weight decay 0.1 on weight matrices only (not on norms or
biases), gradient clipping at 1.0. The multi-step schedule: linear warm-up (2000 steps in the
report) to the peak, the peak until 80% of the training tokens, 31.6% of the peak until 90%,
then 10%. Cosine (down to 10% of the peak) is the option the report compares it with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MULTI_STEP_BOUNDARIES = ((0.8, 0.316), (0.9, 0.1))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1, betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Matrices (linear weights, embeddings) decay; vectors (RMSNorm gains, biases) do not.
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach=True: one fused update over the group's tensors (DTensor-aware under FSDP2).
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, foreach=True)


def lr_at(step: int, peak_lr: float, total_steps: int, warmup_steps: int, schedule: str = "multi_step", min_ratio: float = 0.1) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return peak_lr * (step + 1) / warmup_steps
    if schedule == "multi_step":
        frac = step / max(total_steps, 1)
        ratio = 1.0
        for boundary, r in MULTI_STEP_BOUNDARIES:
            if frac >= boundary:
                ratio = r
        return peak_lr * ratio
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(max(step - warmup_steps, 0) / span, 1.0)
        return peak_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
    if schedule == "constant":
        return peak_lr
    raise ValueError(f"unknown schedule {schedule!r} (multi_step, cosine, constant)")


class Schedule:
    """The schedule as a stateful object (its state is the step), checkpointed with the run."""

    def __init__(self, optimizer: torch.optim.Optimizer, peak_lr: float, total_steps: int, warmup_steps: int, schedule: str = "multi_step", min_ratio: float = 0.1):
        self.optimizer, self.peak_lr, self.total_steps = optimizer, peak_lr, total_steps
        self.warmup_steps, self.schedule, self.min_ratio = warmup_steps, schedule, min_ratio
        self.step_count = 0

    def lr(self) -> float:
        return lr_at(self.step_count, self.peak_lr, self.total_steps, self.warmup_steps, self.schedule, self.min_ratio)

    def apply(self) -> float:
        """Set the learning rate of the coming optimizer step; returns it."""
        lr = self.lr()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        return lr

    def step(self) -> None:
        self.step_count += 1

    def state_dict(self) -> dict:
        return {"step_count": self.step_count, "peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "schedule": self.schedule, "min_ratio": self.min_ratio}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
