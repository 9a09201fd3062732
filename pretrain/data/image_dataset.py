"""Map-style image datasets over a list of files (folders and file lists)."""

import logging

import torch
from PIL import Image
from torch.utils.data import Dataset

from pretrain.data.robust_image import UnreadableImageError, load_rgb
from pretrain.data.sampler import derive_seed, seeded_rng

logger = logging.getLogger("pretrain.data")

# What PIL (OSError, ValueError, SyntaxError by codec) and torchvision's decode_jpeg
# (RuntimeError) raise for a corrupt or truncated file.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, RuntimeError, Image.DecompressionBombError)


def _first_readable(paths, index):
    """Image at ``index``; if unreadable, the next readable one (wrapping), plus the report.

    Replacing instead of dropping keeps every batch full: MoCo's queue and BN statistics
    assume a fixed batch size. Only the requested file is reported, so each bad file is
    counted exactly once per epoch.
    """
    skipped = []
    n = len(paths)
    for attempt in range(n):
        i = (index + attempt) % n
        try:
            return i, load_rgb(paths[i]), skipped
        except UnreadableImageError as e:
            if attempt == 0:
                skipped.append(str(e))
    raise RuntimeError(
        f"none of the {n} images could be read (first: {paths[0]!r}); "
        f"check the data path and the files' format"
    )


class PretrainImageDataset(Dataset):
    """Unlabelled images -> ``(im_q, im_k, skipped)`` with per-sample seeded augmentation.

    Keys are ``(epoch, index)`` (from :class:`EpochSampler`) or plain ``index`` (epoch 0).
    """

    def __init__(self, paths, transform, *, seed=0):
        self.paths = list(paths)
        self.transform = transform
        self.seed = seed

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, tuple) else (0, key)
        if getattr(self.transform, "reads_files", False):
            return self._from_file(epoch, index)
        _, image, skipped = _first_readable(self.paths, index)
        with seeded_rng(derive_seed(self.seed, epoch, index)):
            q, k = self.transform(image)
        return q, k, tuple(skipped)

    def _from_file(self, epoch, index):
        """Hand the path to a transform that decodes it itself (``FastTwoCropTransform``: a JPEG
        decoded at reduced DCT scale when the crops allow, which a decoded PIL image cannot be).
        A file that fails to decode is replaced by the next readable one and reported, as above."""
        skipped, n = [], len(self.paths)
        for attempt in range(n):
            path = self.paths[(index + attempt) % n]
            try:
                with seeded_rng(derive_seed(self.seed, epoch, index)):
                    q, k = self.transform(path)
                return q, k, tuple(skipped)
            except DECODE_ERRORS as e:
                if attempt == 0:
                    skipped.append(f"{path}: {type(e).__name__}: {e}")
        raise RuntimeError(
            f"none of the {n} images could be read (first: {self.paths[0]!r}); "
            f"check the data path and the files' format"
        )


def stack_views(qs, ks):
    """Batch per-sample outputs of the transform: views are stacked; encoded samples
    (``FastTwoCropTransform(decode="device")``: file bytes, crops) give (list of bytes,
    crops [N, 2, 5])."""
    if qs and (isinstance(qs[0], tuple) or qs[0].ndim == 1):  # EncodedImage (or bare bytes)
        return list(qs), torch.stack(ks)
    return torch.stack(qs), torch.stack(ks)


def collate_pairs(items):
    """Stack queries and keys; gather the skip reports for the main process."""
    q, k = stack_views([it[0] for it in items], [it[1] for it in items])
    skipped = [s for it in items for s in it[2]]
    return q, k, skipped


class LabeledImageDataset(Dataset):
    """``(path, label)`` samples -> ``(tensor, label)``; unreadable files replaced and warned."""

    def __init__(self, samples, transform, classes=None):
        self.samples = list(samples)
        self.paths = [p for p, _ in self.samples]
        self.targets = [y for _, y in self.samples]
        self.classes = classes
        self.transform = transform

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, index):
        i, image, skipped = _first_readable(self.paths, index)
        for s in skipped:
            logger.warning("skipped unreadable image %s", s)
        return self.transform(image), self.targets[i]
