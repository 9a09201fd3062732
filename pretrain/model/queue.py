"""The dictionary of negative keys: a C x K ring buffer of L2-normalised features."""

import torch
import torch.nn.functional as F


def random_queue(dim: int, K: int) -> torch.Tensor:
    """The queue's start: K random unit vectors as columns (MoCo v1, Sec. 3.2)."""
    return F.normalize(torch.randn(dim, K), dim=0)


@torch.no_grad()
def enqueue(queue: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write ``keys`` [B, C] over the oldest B columns of ``queue`` [C, K], in place.

    Wraps around the end, so any batch size works (no ``K % B == 0``). ``ptr`` is a
    1-element long tensor on the queue's device, updated in place: no host sync.
    """
    K = queue.shape[1]
    B = keys.shape[0]
    if B > K:
        raise ValueError(
            f"a step enqueues {B} keys but the queue holds only K={K}; "
            f"raise model.K or lower the total batch size (batch_size x world_size)"
        )
    idx = (ptr + torch.arange(B, device=queue.device)) % K
    queue.index_copy_(1, idx, keys.detach().t().to(queue.dtype))
    ptr.copy_((ptr + B) % K)
