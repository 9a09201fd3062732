"""The loader factories: pretraining pairs (any source) and labelled images (evaluation)."""

import os

import torch
from torch.utils.data import DataLoader

from pretrain.data.augment import (
    build_eval_transform,
    build_labeled_train_transform,
    build_pretrain_transform,
)
from pretrain.data.filelist import read_file_list, reject_image_file
from pretrain.data.folder import (
    HOW_TO_MAKE_DATA,
    DataPathError,
    scan_class_folders,
    scan_image_folder,
)
from pretrain.data.image_dataset import LabeledImageDataset, PretrainImageDataset, collate_pairs
from pretrain.data.robust_image import SkipReport
from pretrain.data.sampler import EpochSampler
from pretrain.data.shards import (
    ShardStream,
    count_shard_samples,
    expand_shard_urls,
    looks_like_shards,
)

KINDS = ("auto", "folder", "filelist", "shards")


def resolve_kind(path, kind="auto"):
    """Which source ``path`` is: "folder", "filelist" (a .txt/.lst file) or "shards"."""
    if kind not in KINDS:
        raise ValueError(f"unknown data kind {kind!r}; use one of {KINDS}")
    if kind != "auto":
        return kind
    path = os.fspath(path)
    if looks_like_shards(path):
        return "shards"
    if os.path.isfile(path):
        reject_image_file(path)  # a single image is a file too; say so, not "can't decode 0xff"
        return "filelist"
    if os.path.isdir(path):
        return "folder"
    raise DataPathError(
        f"data path not found: {path!r}; expected an image folder, a file list (.txt, one "
        f"image path per line) or WebDataset shards (shards/train-{{000000..000009}}.tar).\n"
        f"  {HOW_TO_MAKE_DATA}"
    )


def _worker_options(num_workers):
    opts = dict(num_workers=num_workers, pin_memory=torch.cuda.is_available())
    if num_workers > 0:
        opts.update(persistent_workers=True, prefetch_factor=4)
    return opts


class PretrainLoader:
    """Iterates ``(im_q, im_k)`` batches; see :func:`build_pretrain_loader`."""

    def __init__(self, dataloader, epoch_source, iters_per_epoch, kind, num_samples):
        self.dataloader = dataloader
        self._epoch_source = epoch_source  # EpochSampler or ShardStream
        self.iters_per_epoch = iters_per_epoch
        self.kind = kind
        self.num_samples = num_samples
        self.epoch = 0
        self.start_iter = 0
        self._report = SkipReport()

    @property
    def skipped(self):
        """Unreadable images skipped so far (all epochs, this rank)."""
        return self._report.total

    def restore_skipped(self, total):
        """Continue the count of a resumed run (the end-of-run total covers the whole run)."""
        self._report.total = int(total)

    def report_skipped(self, reasons):
        """Count and warn about images the main process could not use (decoded on the device)."""
        self._report.add(reasons)

    @property
    def batch_size(self):
        return self.dataloader.batch_size or self._epoch_source.batch_size

    def set_epoch(self, epoch, start_iter=0):
        """Select the epoch's order; skip its first ``start_iter`` batches without loading them."""
        if not 0 <= start_iter <= self.iters_per_epoch:
            raise ValueError(f"start_iter={start_iter} is outside 0..{self.iters_per_epoch}")
        self.epoch, self.start_iter = int(epoch), int(start_iter)
        if isinstance(self._epoch_source, EpochSampler):
            self._epoch_source.set_epoch(epoch, start=start_iter * self.dataloader.batch_size)
        else:
            self._epoch_source.set_epoch(epoch, start_iter)

    def __len__(self):
        """Iterations in a full epoch (a resumed epoch yields ``len - start_iter``)."""
        return self.iters_per_epoch

    def __iter__(self):
        before = self._report.total
        for q, k, skipped in self.dataloader:
            if skipped:
                self._report.add(skipped)
            yield q, k
        self._report.summary(self.epoch, self._report.total - before)


def build_pretrain_loader(
    path,
    *,
    aug="v2",
    crop_size=224,
    batch_size,
    num_workers,
    rank=0,
    world_size=1,
    seed=0,
    kind="auto",
    samples_per_epoch=None,
    drop_last=True,
    transform=None,
):
    """MoCo pretraining batches from a folder, a file list or WebDataset shards.

    ``iter(loader)`` yields ``(im_q, im_k)`` float tensors [B, 3, crop, crop]; ``len(loader)``
    is iterations per epoch; ``loader.set_epoch(epoch, start_iter=0)`` before each epoch;
    ``loader.skipped`` counts unreadable images. Labels are never read.
    ``transform``: ``callable(PIL) -> [q, k]``, default ``build_pretrain_transform(aug,
    crop_size)``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    kind = resolve_kind(path, kind)
    transform = transform or build_pretrain_transform(aug, crop_size)

    if kind == "shards":
        urls = expand_shard_urls(path)
        if samples_per_epoch is None:
            samples_per_epoch = count_shard_samples(urls)
        if samples_per_epoch is None:
            raise ValueError(
                f"samples_per_epoch is needed for shards {os.fspath(path)!r}: the shards have no "
                "index file (*-index.json, written by tools/make_shards.py); pass "
                "the dataset size"
            )
        per_rank = int(samples_per_epoch) // world_size
        iters = per_rank // batch_size if drop_last else -(-per_rank // batch_size)
        if iters < 1:
            raise ValueError(
                f"samples_per_epoch={samples_per_epoch} gives no batch of "
                f"{batch_size} "
                f"on each of {world_size} rank(s); lower batch_size or raise "
                "samples_per_epoch"
            )
        stream = ShardStream(
            urls,
            transform,
            batch_size=batch_size,
            batches_per_rank=iters,
            rank=rank,
            world_size=world_size,
            seed=seed,
        )
        dl = DataLoader(stream, batch_size=None, **_worker_options(num_workers))
        return PretrainLoader(dl, stream, iters, kind, int(samples_per_epoch))

    paths = read_file_list(path) if kind == "filelist" else scan_image_folder(path)
    dataset = PretrainImageDataset(paths, transform, seed=seed)
    sampler = EpochSampler(
        len(paths), rank=rank, world_size=world_size, seed=seed, samples_per_epoch=samples_per_epoch
    )
    iters = sampler.per_rank // batch_size if drop_last else -(-sampler.per_rank // batch_size)
    if iters < 1:
        raise ValueError(
            f"{len(paths)} images in {os.fspath(path)!r} give no full batch of "
            f"{batch_size} on each "
            f"of {world_size} rank(s); lower batch_size, pass drop_last=False, or add images"
        )
    dl = DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        drop_last=drop_last,
        collate_fn=collate_pairs,
        **_worker_options(num_workers),
    )
    return PretrainLoader(dl, sampler, iters, kind, len(paths))


def build_labeled_loader(
    path, *, image_size, batch_size, train, num_workers=0, crop_scale=None, hflip=True
):
    """Images in ``path/<class>/`` with labels: train = RandomResizedCrop + flip (shuffled);
    eval = resize 1.14x + center crop. Both ImageNet-normalised. ``crop_scale``: the train
    crops' area range (default torchvision's (0.08, 1))."""
    samples, classes = scan_class_folders(path)
    if train:
        transform = build_labeled_train_transform(
            image_size, *([crop_scale] if crop_scale else []), hflip=hflip
        )
    else:
        transform = build_eval_transform(image_size)
    dataset = LabeledImageDataset(samples, transform, classes)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train,
        drop_last=False,
        **_worker_options(num_workers),
    )
