"""Shuffling BN (MoCo v1, Sec. 3.3): keys are encoded on a shuffled batch.

Batch statistics of a query and of its positive key then come from different
samples, so the model cannot solve the pretext task through BN ("cheating").

- Several processes: gather the key images of all ranks, permute with a
  permutation drawn on rank 0 and broadcast, encode each rank's slice, undo it
  (the official ``_batch_shuffle_ddp``, but on the tensor's own device: works with gloo on CPU).
- One process: shuffle the batch, encode with :class:`~pretrain.model.split_bn.SplitBatchNorm`
  groups, undo (the official CIFAR demo).
"""

import torch
import torch.distributed as dist

from pretrain import distributed as du


@torch.no_grad()
def batch_shuffle_ddp(x: torch.Tensor, generator=None):
    """-> (this rank's slice of the globally shuffled batch, index that undoes it).

    ``generator``: where rank 0 draws the permutation (default: torch's global RNG).
    """
    du.check_equal_batch(x.shape[0])
    x_all = du.all_gather_cat(x)
    total = x_all.shape[0]
    idx_shuffle = (
        torch.randperm(total, device=x.device, generator=generator)
        if du.rank() == 0
        else torch.empty(total, dtype=torch.long, device=x.device)
    )
    dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    local = idx_shuffle.view(du.world_size(), -1)[du.rank()]
    return x_all[local], idx_unshuffle


@torch.no_grad()
def batch_unshuffle_ddp(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`batch_shuffle_ddp` on the encoded slice: this rank's own
    samples, in order.
    """
    x_all = du.all_gather_cat(x)
    local = idx_unshuffle.view(du.world_size(), -1)[du.rank()]
    return x_all[local]


@torch.no_grad()
def batch_shuffle_single(x: torch.Tensor, generator=None):
    idx_shuffle = torch.randperm(x.shape[0], device=x.device, generator=generator)
    return x[idx_shuffle], torch.argsort(idx_shuffle)


@torch.no_grad()
def batch_unshuffle_single(x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
    return x[idx_unshuffle]
