"""AdamW and its learning-rate schedule: optional linear warm-up, then cosine annealing to ``min_lr``.

Stepped once per optimizer step (smoother than per epoch, same end points as the paper's cosine
annealing to 1e-6). Built on ``LambdaLR`` so its state is a plain counter that resumes exactly.
"""

from __future__ import annotations

import math

import torch


def cosine_lr(step: int, total_steps: int, warmup_steps: int, lr: float, min_lr: float) -> float:
    """Learning rate after ``step`` optimizer steps (step 0 is the first update)."""
    if warmup_steps > 0 and step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    span = max(total_steps - warmup_steps - 1, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                    min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Scale every param group's initial lr along :func:`cosine_lr` (group 0 runs at the peak lr;
    a group at a share of it, the backbone's, follows the same curve at that share)."""
    base = optimizer.param_groups[0]["lr"]

    def factor(step: int) -> float:
        return cosine_lr(step, total_steps, warmup_steps, base, min_lr) / base

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def current_lr(scheduler: torch.optim.lr_scheduler.LambdaLR) -> float:
    """Param group 0's learning rate at the scheduler's current step, from the host's numbers (a
    captured step keeps the groups' rates in device tensors, which cost a sync to read)."""
    return float(scheduler.base_lrs[0]) * scheduler.lr_lambdas[0](scheduler.last_epoch)


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                    betas: tuple[float, float], backbone_lr_scale: float = 1.0,
                    head_prefix: str = "head.") -> torch.optim.AdamW:
    """AdamW with decay on weight matrices only: biases, norm gains and parameters flagged
    ``_no_weight_decay`` (Mamba's A_log and D, as in mamba-ssm) are not decayed. Frozen parameters
    (``requires_grad=False``) are left out.

    ``backbone_lr_scale`` != 1 puts every parameter outside the classifier head (names not starting
    with ``head_prefix``) into groups at ``lr * backbone_lr_scale``, after the head's groups, so group
    0 always runs at ``lr`` (the schedule scales every group alike).

    The fused implementation is used because it can skip an update on the device (its ``found_inf``
    input): the loop guards every step against non-finite values without a host sync."""
    split = backbone_lr_scale != 1.0
    groups = {(part, decays): [] for part in ("head", "backbone") for decays in (True, False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        part = "head" if not split or name.startswith(head_prefix) else "backbone"
        groups[part, not (p.ndim < 2 or getattr(p, "_no_weight_decay", False))].append(p)
    out = [{"params": params, "weight_decay": weight_decay if decays else 0.0,
            "lr": lr * (backbone_lr_scale if part == "backbone" else 1.0)}
           for (part, decays), params in groups.items() if params]
    if not out:
        raise ValueError("no trainable parameters (is everything frozen?)")
    return torch.optim.AdamW(out, lr=lr, betas=betas, fused=True)
