"""Momentum update of the key encoder: theta_k <- m * theta_k + (1 - m) * theta_q."""

import torch
import torch.nn as nn


@torch.no_grad()
def momentum_update(encoder_k: nn.Module, encoder_q: nn.Module, m: float) -> None:
    """One vectorised update over all parameters.

    Buffers (BN running statistics) are left alone, as in the official code: the key encoder's
    are its own, updated by its forward passes in train mode.
    """
    params_k = list(encoder_k.parameters())
    params_q = [p.detach() for p in encoder_q.parameters()]
    if len(params_k) != len(params_q):
        raise ValueError("key and query encoders have different parameter lists")
    torch._foreach_mul_(params_k, m)
    torch._foreach_add_(params_k, params_q, alpha=1.0 - m)
