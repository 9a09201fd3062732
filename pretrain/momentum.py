"""Momentum update of the key encoder: theta_k <- m * theta_k + (1 - m) * theta_q."""
import torch
import torch.nn as nn


@torch.no_grad()
def momentum_update(encoder_k: nn.Module, encoder_q: nn.Module, m: float) -> None:
    """One vectorised update over all parameters; buffers (BN running stats) are copied."""
    params_k = list(encoder_k.parameters())
    params_q = [p.detach() for p in encoder_q.parameters()]
    if len(params_k) != len(params_q):
        raise ValueError("key and query encoders have different parameter lists")
    torch._foreach_mul_(params_k, m)
    torch._foreach_add_(params_k, params_q, alpha=1.0 - m)
    for b_k, b_q in zip(encoder_k.buffers(), encoder_q.buffers()):
        b_k.copy_(b_q)
