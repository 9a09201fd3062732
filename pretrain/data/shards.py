"""WebDataset tar shards: streamed, split across ranks and workers, resampled.

An epoch is ``samples_per_epoch`` samples, not a scan of the files: each (rank, worker)
stream owns a disjoint subset of the shards and draws shards from it at random (seeded by
seed, epoch, rank, worker), shuffling samples in a buffer. This is how web-scale sets
(Instagram-1B in the paper: ~1.4 epochs) are read.
"""

import glob
import json
import logging
import os
import random
import re

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from pretrain.data.folder import HOW_TO_MAKE_DATA, DataPathError, is_image_file
from pretrain.data.image_dataset import DECODE_ERRORS, stack_views
from pretrain.data.robust_image import UnreadableImageError, load_rgb
from pretrain.data.sampler import derive_seed, seeded_rng

logger = logging.getLogger("pretrain.data")

# Written by tools/make_shards.py next to the shards: per-shard sample counts.
INDEX_SUFFIX = "-index.json"
_URL_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)


def looks_like_shards(path):
    path = os.fspath(path)
    if "{" in path or path.endswith(".tar") or _URL_SCHEME.match(path) and not os.path.exists(path):
        return True
    return os.path.isdir(path) and bool(glob.glob(os.path.join(path, "*.tar")))


def expand_shard_urls(path):
    """``shards/train-{000000..000099}.tar``, a single .tar, or a folder of .tar -> urls."""
    path = os.fspath(path)
    if os.path.isdir(path):
        urls = sorted(glob.glob(os.path.join(path, "*.tar")))
        if not urls:
            raise DataPathError(f"no .tar shards in folder {path!r}.\n  {HOW_TO_MAKE_DATA}")
        return urls
    urls = wds.shardlists.expand_urls(path)
    local = [u for u in urls if not _URL_SCHEME.match(u) or u.startswith("file:")]
    missing = [u for u in local if not os.path.isfile(u.removeprefix("file:"))]
    if missing:
        raise DataPathError(
            f"{len(missing)} of {len(urls)} shard(s) of {path!r} do not exist (first: "
            f"{missing[0]!r}); expected e.g. "
            f"shards/train-{{000000..000009}}.tar.\n  {HOW_TO_MAKE_DATA}"
        )
    return urls


def count_shard_samples(urls):
    """Total samples in ``urls`` from make_shards' index files, or None if unknown."""
    counts = {}
    for folder in {os.path.dirname(u) for u in urls}:
        for index_file in glob.glob(os.path.join(folder, "*" + INDEX_SUFFIX)):
            with open(index_file) as f:
                for name, n in json.load(f).get("shard_counts", {}).items():
                    counts[os.path.join(folder, name)] = int(n)
    try:
        return sum(counts[u] for u in urls)
    except KeyError:
        return None


def _image_member(sample):
    """The first image member of a webdataset sample -> (its name, its bytes)."""
    name = f"{sample.get('__url__', '?')}:{sample.get('__key__', '?')}"
    for ext, data in sample.items():
        if not ext.startswith("__") and is_image_file("x." + ext):
            return f"{name}.{ext}", data
    raise UnreadableImageError(f"{name}: no image member (has {sorted(sample)})")


def _two_views(transform, sample):
    """The transform's two views of a sample. A transform that ``reads_files`` gets the bytes
    (``FastTwoCropTransform``: reduced-size decode, or bytes for the device); others a PIL image."""
    name, data = _image_member(sample)
    if not getattr(transform, "reads_files", False):
        return transform(load_rgb(data, name=name))
    try:
        return transform(data, name=name)  # the name: for a warning if the device cannot decode it
    except DECODE_ERRORS as e:
        raise UnreadableImageError(f"{name}: {type(e).__name__}: {e}") from e


class ShardStream(IterableDataset):
    """Yields ready batches ``(im_q, im_k, skipped)``; use with ``DataLoader(batch_size=None)``.

    Batching in the worker keeps batches full when a corrupt image is dropped. The epoch
    and resume point live in a shared-memory tensor so persistent workers see
    ``set_epoch``. Batch ``j`` of a rank comes from stream ``j % num_workers`` (the
    DataLoader's round robin), so ``start_iter`` is skipped exactly: every stream drops its
    share of raw samples without decoding them (exact unless those held corrupt images;
    resuming with another ``num_workers`` gives a different, equally valid, stream).
    """

    def __init__(
        self,
        urls,
        transform,
        *,
        batch_size,
        batches_per_rank,
        rank=0,
        world_size=1,
        seed=0,
        shuffle_buffer=1000,
    ):
        self.urls = list(urls)
        self.transform = transform
        self.batch_size = batch_size
        self.batches_per_rank = batches_per_rank
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer = shuffle_buffer
        self.state = torch.zeros(2, dtype=torch.long).share_memory_()  # epoch, start_iter

    def set_epoch(self, epoch, start_iter=0):
        self.state[0], self.state[1] = int(epoch), int(start_iter)

    def _own_shards(self, worker, num_workers):
        streams = self.world_size * num_workers
        stream = self.rank * num_workers + worker
        if len(self.urls) >= streams:
            return self.urls[stream::streams]
        # Fewer shards than streams: all streams draw from all shards with different seeds.
        return self.urls

    def _raw_samples(self, rng, shards):
        empty_in_a_row = 0
        while True:
            url = shards[rng.randrange(len(shards))]
            n = 0
            for sample in wds.tarfile_samples([dict(url=url)], handler=wds.warn_and_continue):
                n += 1
                yield sample
            empty_in_a_row = 0 if n else empty_in_a_row + 1
            if empty_in_a_row > 10 * len(shards):
                raise RuntimeError(
                    f"no samples could be read from the shards {shards[:3]}...; "
                    f"check them with `tar tf SHARD`"
                )

    def __iter__(self):
        epoch, start_iter = (int(v) for v in self.state.tolist())
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        # The DataLoader asks workers 0, 1, ... in turn from the first batch it delivers, so
        # after skipping ``start_iter`` batches worker w plays the stream ("role") that
        # produces batches j = start_iter + w, start_iter + w + num_workers, ...
        role = (worker + start_iter) % num_workers
        n_batches = self.batches_per_rank // num_workers + (
            role < self.batches_per_rank % num_workers
        )
        n_skip = max(0, -(-(start_iter - role) // num_workers))  # ceil: this role's skipped batches
        rng = random.Random(derive_seed(self.seed, epoch, self.rank, role, 0xB0F))
        samples = wds.filters._shuffle(
            self._raw_samples(rng, self._own_shards(role, num_workers)),
            bufsize=self.shuffle_buffer,
            initial=self.shuffle_buffer,
            rng=rng,
        )
        position = 0
        for _ in range(min(n_skip, n_batches) * self.batch_size):
            next(samples)
            position += 1
        for _ in range(n_skip, n_batches):
            qs, ks, skipped = [], [], []
            while len(qs) < self.batch_size:
                sample = next(samples)
                position += 1
                try:
                    with seeded_rng(derive_seed(self.seed, epoch, self.rank, role, position)):
                        q, k = _two_views(self.transform, sample)
                except UnreadableImageError as e:
                    skipped.append(str(e))
                    continue
                qs.append(q)
                ks.append(k)
            yield (*stack_views(qs, ks), skipped)
