"""Small data sets held in memory, the two MoCo views augmented in batches on tensors.

For sets whose decoded images fit in memory (the demo's digits, CIFAR-sized sets on a GPU): every
image is decoded once into one uint8 tensor [N, 3, S, S]; each step then crops, resizes and flips
a whole batch with one ``grid_sample`` and applies the colour, greyscale and blur of
``pretrain.data.device_augment.DeviceAugment`` (the reference recipe's distributions) to the batch.
No loader workers, no per-image Python: on one CPU core the augmentation is a few percent of a
ResNet-18 step, against most of it for the per-image PIL path at small sizes.

Randomness is a pure function of (seed, rank, epoch, iteration): the epoch's order comes from a
generator seeded by (seed, epoch), each batch's crops and colours from one seeded by
(seed, rank, epoch, iteration). A resumed run therefore sees exactly the batches of the straight
run without any stream state in the checkpoint.

The crop is torchvision's RandomResizedCrop in distribution, vectorised: area ~ U(scale) x image
area, log aspect ratio ~ U(log 3/4, log 4/3); a box that does not fit is shrunk to fit (the
reference retries 10 times, then falls back to a centre crop; at these scales the difference is
rare and small). Resizing is bilinear on the box (no antialias), as torchvision's tensor path.
"""

import math
import os

import torch
import torch.nn.functional as nnf

from pretrain.data.device_augment import DeviceAugment
from pretrain.data.folder import DataPathError, scan_image_folder
from pretrain.data.robust_image import UnreadableImageError, load_rgb

CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
MAX_IMAGES = 2_000_000  # a guard: beyond this the set is not "small"; use the streaming loaders


def load_images(root, size=None, paths=None):
    """Every image under ``root`` (or the files ``paths``) decoded to one uint8 tensor
    [N, 3, S, S].

    ``size``: resize (bilinear, PIL) each image to S x S; None requires all images to share one
    square size (the demo's renders) and uses it.
    """
    paths = scan_image_folder(root) if paths is None else paths
    if len(paths) > MAX_IMAGES:
        raise DataPathError(
            f"{len(paths)} images under {root!r}: too many to hold in memory "
            f"(limit {MAX_IMAGES}); set data.in_memory=false"
        )
    out = None
    for i, path in enumerate(paths):
        try:
            image = load_rgb(path)
        except UnreadableImageError as e:
            raise DataPathError(
                f"{path!r} cannot be read ({e}); data.in_memory loads every image "
                f"up front: remove or replace it"
            ) from e
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), resample=2)  # PIL.Image.BILINEAR
        w, h = image.size
        if out is None:
            if w != h:
                raise DataPathError(
                    f"{path!r} is {w}x{h}: data.in_memory needs square images of one "
                    f"size, or data.memory_size to resize them"
                )
            out = torch.empty(len(paths), 3, h, w, dtype=torch.uint8)
        elif (w, h) != tuple(out.shape[2:]):
            raise DataPathError(
                f"{path!r} is {w}x{h}, the first image "
                f"{out.shape[3]}x{out.shape[2]}: "
                f"set data.memory_size to resize all to one size"
            )
        out[i] = (
            torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
            .view(h, w, 3)
            .permute(2, 0, 1)
        )
    return out


def sample_boxes(n, scale, generator, ratio=CROP_RATIO):
    """[n, 4] crop boxes (cx, cy, w, h) as fractions of the image side, RandomResizedCrop-like."""
    u = torch.rand(n, 4, generator=generator)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = log_r.exp()
    w = (area * r).sqrt().clamp(max=1.0)
    h = (area / r).sqrt().clamp(max=1.0)
    cx = w / 2 + (1 - w) * u[:, 2]
    cy = h / 2 + (1 - h) * u[:, 3]
    return torch.stack([cx, cy, w, h], dim=1)


def folder_groups(paths):
    """[N] int64 group of each image: images in one folder are views of one instance
    (``data.positives: folder``)."""
    index = {}
    return torch.tensor([index.setdefault(os.path.dirname(p), len(index)) for p in paths])


class GroupPartners:
    """For each image, a random image of its group (itself only when it is alone in it)."""

    def __init__(self, groups):
        groups = torch.as_tensor(groups, dtype=torch.long)
        self.members = torch.argsort(groups, stable=True)  # images ordered by group
        sizes = torch.bincount(groups)
        starts = torch.cumsum(sizes, 0) - sizes
        self.start, self.size = starts[groups], sizes[groups]  # per image: its group's slice

    def __call__(self, index, generator):
        u = torch.rand(len(index), generator=generator)
        offset = (u * self.size[index]).long().clamp_(max=self.size[index] - 1)
        return self.members[self.start[index] + offset]


def crop_resize_flip(images, boxes, flips, out_size):
    """uint8 [B, 3, H, W] -> uint8 [B, 3, out, out]: each box cropped, resized bilinearly, flipped
    where ``flips``; one ``grid_sample`` for the batch."""
    b = images.shape[0]
    boxes, flips = boxes.to(images.device), flips.to(images.device)
    cx, cy, w, h = boxes.unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = w * torch.where(flips, -1.0, 1.0)
    theta[:, 0, 2] = 2 * cx - 1
    theta[:, 1, 1] = h
    theta[:, 1, 2] = 2 * cy - 1
    grid = nnf.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    out = nnf.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


class MemoryPretrainLoader:
    """``(im_q, im_k)`` batches of normalised float views from images held in memory.

    The interface of :class:`pretrain.data.loader.PretrainLoader` that the training loop uses:
    ``len()`` (iterations per epoch), ``set_epoch(epoch, start_iter)``, iteration, ``skipped``.
    Every rank takes its own slice of one epoch order shared by all (seeded), drop_last.
    """

    kind = "memory"

    def __init__(
        self,
        images,
        *,
        aug="v2",
        crop_size=32,
        scale=(0.2, 1.0),
        batch_size,
        rank=0,
        world_size=1,
        seed=0,
        device="cpu",
        samples_per_epoch=None,
        groups=None,
        hflip=True,
    ):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise TypeError(
                f"images must be uint8 [N, 3, H, W], got {images.dtype} {tuple(images.shape)}"
            )
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.num_samples = images.shape[0]
        self.crop_size, self.scale, self.hflip = int(crop_size), tuple(scale), bool(hflip)
        self.batch_size, self.rank, self.world_size, self.seed = (
            batch_size,
            rank,
            world_size,
            int(seed),
        )
        # data.samples_per_epoch: an epoch of that many draws (the images reshuffled as needed),
        # as the file-based loaders do; None: every image once.
        self.samples_per_epoch = int(samples_per_epoch or self.num_samples)
        self.iters_per_epoch = self.samples_per_epoch // (batch_size * world_size)
        if self.iters_per_epoch < 1:
            raise ValueError(
                f"{self.num_samples} images give no full batch of {batch_size} on "
                "each of "
                f"{world_size} rank(s); lower batch_size or add images"
            )
        self.augment = DeviceAugment(aug, crop_size, seed=0).to(self.device)
        # groups: the key view comes from another image of the query's group (multi-view
        # instances, data.positives: folder) instead of a second crop of the same image.
        if groups is not None and len(groups) != self.num_samples:
            raise ValueError(f"{len(groups)} groups for {self.num_samples} images")
        self.partners = GroupPartners(groups) if groups is not None else None
        self.epoch, self.start_iter, self.skipped = 0, 0, 0

    def restore_skipped(self, total):
        self.skipped = int(total)  # nothing is ever skipped here: every image was decoded up front

    def report_skipped(self, reasons):
        self.skipped += len(reasons)

    def __len__(self):
        return self.iters_per_epoch

    def set_epoch(self, epoch, start_iter=0):
        if not 0 <= start_iter <= self.iters_per_epoch:
            raise ValueError(f"start_iter={start_iter} is outside 0..{self.iters_per_epoch}")
        self.epoch, self.start_iter = int(epoch), int(start_iter)

    def epoch_order(self, epoch):
        """This rank's image indices for ``epoch``, [iters_per_epoch * batch_size]."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        rounds = -(-self.samples_per_epoch // self.num_samples)
        perm = torch.cat([torch.randperm(self.num_samples, generator=g) for _ in range(rounds)])
        used = self.iters_per_epoch * self.batch_size * self.world_size
        return perm[:used].view(self.iters_per_epoch, self.world_size, self.batch_size)[
            :, self.rank
        ]

    def batch_generator(self, epoch, it):
        g = torch.Generator()
        g.manual_seed(((self.seed * 1_000_003 + epoch) * 65_537 + it) * 257 + self.rank)
        return g

    def two_views(self, index, generator):
        """Two independent augmentations of ``images[index]`` (the query and key views); with
        groups the key view is of a random image of each query image's group."""
        query = self.images.index_select(0, index.to(self.device))
        if self.partners is None:  # MoCo's: both views from the same images, gathered once
            batches = [(index, query)] * 2
        else:
            rows = self.partners(index, generator)
            batches = [(index, query), (rows, self.images.index_select(0, rows.to(self.device)))]
        views = []
        for rows, batch in batches:
            boxes = sample_boxes(len(rows), self.scale, generator)
            flips = torch.rand(len(rows), generator=generator) < (0.5 if self.hflip else 0.0)
            crops = crop_resize_flip(batch, boxes, flips, self.crop_size)
            self.augment.generator = generator  # the colour draws come from the same batch stream
            views.append(self.augment(crops))
        return views

    def __iter__(self):
        order = self.epoch_order(self.epoch)
        for it in range(self.start_iter, self.iters_per_epoch):
            im_q, im_k = self.two_views(order[it], self.batch_generator(self.epoch, it))
            yield im_q, im_k


POSITIVES = ("crops", "folder")


def build_memory_loader(
    path,
    *,
    aug,
    crop_size,
    scale,
    batch_size,
    rank=0,
    world_size=1,
    seed=0,
    device="cpu",
    size=None,
    samples_per_epoch=None,
    positives="crops",
    hflip=True,
):
    """Load ``path``'s images into memory and return a :class:`MemoryPretrainLoader` over them.

    ``positives``: "crops" (MoCo's: two crops of one image) or "folder" (the key view from
    another image in the query image's folder: ``path/<instance>/<view>.jpg``). ``hflip``:
    whether the views are mirrored at random (MoCo's; off for digits).
    """
    if positives not in POSITIVES:
        raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    paths = scan_image_folder(path)
    groups = folder_groups(paths) if positives == "folder" else None
    return MemoryPretrainLoader(
        load_images(path, size, paths),
        aug=aug,
        crop_size=crop_size,
        scale=scale,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        device=device,
        samples_per_epoch=samples_per_epoch,
        groups=groups,
        hflip=hflip,
    )
