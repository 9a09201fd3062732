"""Epoch orders for map-style sources and per-sample seeds for the augmentations.

Reproducibility contract: the crops of sample ``index`` in epoch ``epoch`` depend only on
(seed, epoch, index) -- not on the number of workers, ranks, or where a run was resumed.
"""

import contextlib
import random

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*keys):
    """A well-mixed 32-bit seed from integers (NumPy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(k) & 0xFFFFFFFF for k in keys]).generate_state(1)[0])


@contextlib.contextmanager
def seeded_rng(seed):
    """Seed torch's CPU generator and Python's ``random`` for a block, then restore them.

    torchvision's transforms draw from the global generators; restoring keeps the caller's
    stream (model init, dropout ... in a ``num_workers=0`` run) untouched. CUDA generators
    are not touched.
    """
    torch_state = torch.random.default_generator.get_state()
    py_state = random.getstate()
    torch.random.default_generator.manual_seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        torch.random.default_generator.set_state(torch_state)
        random.setstate(py_state)


def epoch_order(num_samples, *, seed, epoch, samples_per_epoch=None):
    """The whole job's sample order for one epoch: a seeded permutation, repeated (fresh
    permutations) until ``samples_per_epoch`` when that is larger than the dataset."""
    total = num_samples if samples_per_epoch is None else int(samples_per_epoch)
    g = torch.Generator().manual_seed(derive_seed(seed, epoch, 0x5A3))
    chunks, have = [], 0
    while have < total:
        chunks.append(torch.randperm(num_samples, generator=g))
        have += num_samples
    return torch.cat(chunks)[:total].tolist()


class EpochSampler(Sampler):
    """Distributed-aware sampler: rank ``r`` gets the disjoint slice ``order[r::world_size]``.

    Yields ``(epoch, index)`` keys so the dataset knows the epoch even inside persistent
    workers, which never see ``set_epoch`` on their copy of the dataset.
    ``set_epoch(epoch, start=n)`` drops this rank's first ``n`` samples without loading
    them (exact mid-epoch resume).
    """

    def __init__(self, num_samples, *, rank=0, world_size=1, seed=0, samples_per_epoch=None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.num_samples = num_samples
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.samples_per_epoch = samples_per_epoch
        total = num_samples if samples_per_epoch is None else int(samples_per_epoch)
        # Drop the tail so every rank runs the same number of steps (no padding duplicates).
        self.per_rank = total // world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch, start=0):
        self.epoch, self.start = int(epoch), int(start)

    def rank_indices(self, epoch):
        order = epoch_order(
            self.num_samples, seed=self.seed, epoch=epoch, samples_per_epoch=self.samples_per_epoch
        )
        return order[self.rank :: self.world_size][: self.per_rank]

    def __iter__(self):
        for index in self.rank_indices(self.epoch)[self.start :]:
            yield (self.epoch, index)

    def __len__(self):
        return max(0, self.per_rank - self.start)
