"""The learning-rate schedules of the MoCo recipes, the linear protocol and the supervised baseline.

One function: an optional linear warm-up, then a cosine decay to 0 (MoCo v2) or steps of ``gamma``
at milestones (MoCo v1: x0.1 at epochs 120 and 160; linear protocol: at 60 and 80).
"""

import math


def lr_at(base_lr, epoch, *, epochs, schedule="cosine", warmup_epochs=0, milestones=(), gamma=0.1):
    """Learning rate at a (fractional) ``epoch`` of ``epochs`` (any unit: epochs or steps)."""
    if warmup_epochs and epoch < warmup_epochs:
        return base_lr * (epoch + 1e-8) / warmup_epochs
    if schedule == "cosine":
        return base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / max(epochs, 1)))
    if schedule == "step":
        return base_lr * gamma ** sum(epoch >= m for m in milestones)
    raise ValueError(f"unknown lr schedule {schedule!r}: 'cosine' or 'step'")


def warmup_cosine_lr(base_lr, step, total_steps, warmup_steps):
    """Linear warm-up from 0 over ``warmup_steps``, then the cosine over the remaining steps."""
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    return lr_at(base_lr, step - warmup_steps, epochs=total_steps - warmup_steps, schedule="cosine")
