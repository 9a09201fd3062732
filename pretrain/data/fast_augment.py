"""CPU half of the fast MoCo data path: decode (at reduced size when it can), two uint8 crops.

The reference path (``pretrain.data.augment``) does every step in PIL and hands float tensors to
the GPU; on ImageNet-sized JPEGs its colour jitter and blur cost ~5x the decode. Here the CPU
does only what needs the whole image - decode and the two RandomResizedCrop + flip views - and
returns small uint8 tensors (4x less IPC / pinned memory than float). The per-pixel
augmentations run batched on the device: ``pretrain.data.device_augment.DeviceAugment``.

What is computed is the reference's: the crop box is drawn by torchvision's own
``RandomResizedCrop.get_params`` on the ORIGINAL image size (scale 0.2..1, ratio 3/4..4/3) and
the flip by ``torch.rand(1) < 0.5``, both from the global torch generator like the reference.
Only then is the JPEG decoded, by PIL ``draft`` at the coarsest DCT scale (1/2, 1/4, 1/8) at
which both crop boxes still have at least ``crop_size`` pixels a side (the crops are downscaled
anyway), and the box is mapped to the decoded size. Flip commutes with every later
augmentation (colour ops are per pixel, the blur kernel is symmetric), so it is done here.

Optional decode on the training device: ``FastTwoCropTransform(decode="device")`` returns the
file's bytes (with its name) and the drawn crops; ``decode_two_crops_on_device`` decodes a batch
there (nvJPEG on a GPU, so the host only reads files; libjpeg in the main process on a CPU) and
crops it. What torchvision cannot decode (BMP, TIFF, PPM, ...) falls back to PIL on the host.
"""

import io
import os
from typing import NamedTuple, Optional

import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image, decode_jpeg

from pretrain.data.augment import AUGMENTATIONS
from pretrain.data.robust_image import UnreadableImageError, load_rgb

CROP_SCALE = (0.2, 1.0)  # MoCo v1 Sec. 4.1 / main_moco.py
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # torchvision's default, used by the reference
DRAFT_SCALES = (8, 4, 2, 1)  # what libjpeg's DCT scaling (PIL ``draft``) offers
DECODERS = ("cpu", "device")


def sample_crop(width, height, scale=CROP_SCALE, ratio=CROP_RATIO):
    """-> (top, left, h, w) in original pixels, drawn by torchvision's RandomResizedCrop sampler.

    Only the size matters to it, so it gets a zero-cost expanded tensor of that shape.
    """
    shape_only = torch.empty(1, 1, 1, dtype=torch.uint8).expand(1, height, width)
    return T.RandomResizedCrop.get_params(shape_only, list(scale), list(ratio))


def sample_flip():
    """Same draw as torchvision's RandomHorizontalFlip(p=0.5)."""
    return bool(torch.rand(1) < 0.5)


def draft_scale(boxes, crop_size):
    """Coarsest JPEG DCT scale at which every (top, left, h, w) box keeps >= crop_size px a side."""
    smallest = min(min(h, w) for (_, _, h, w) in boxes)
    for s in DRAFT_SCALES:
        if smallest >= s * crop_size:
            return s
    return 1


def scale_box(box, s):
    """(top, left, h, w) in original pixels -> PIL (left, upper, right, lower) at 1/s, as floats.

    libjpeg's 1/s DCT scaling makes decoded pixel i cover original pixels [s*i, s*(i+1)), so the
    box maps exactly by /s; PIL's resize takes the fractional box (no rounding shift).
    """
    top, left, h, w = box
    return left / s, top / s, (left + w) / s, (top + h) / s


def _is_jpeg(image):
    return getattr(image, "format", None) == "JPEG" and bool(getattr(image, "tile", None))


def views_from_pil(image, boxes, flips, crop_size):
    """Two views of a PIL image (loaded, or lazily opened: then decoded at reduced size).

    ``draft`` only works before the pixels are loaded: pass ``Image.open(path)``, not a
    converted image, to get the reduced-size decode.
    """
    s = 1
    if _is_jpeg(image):
        s = draft_scale(boxes, crop_size)
        if s > 1:
            w0 = image.size[0]
            # PIL picks the largest scale with size // request >= scale; asking for size // s gives
            # s.
            image.draft("RGB", (max(1, w0 // s), max(1, image.size[1] // s)))
            s = _decoded_scale(image, w0)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if s == 1:
        # HWC memory seen as CHW: the layout torch's uint8 antialiased resize is fastest on.
        return crop_views(F.pil_to_tensor(image), boxes, flips, crop_size)
    views = []
    for box, flip in zip(boxes, flips):
        v = F.pil_to_tensor(
            image.resize((crop_size, crop_size), Image.BILINEAR, box=scale_box(box, s))
        )
        views.append((F.horizontal_flip(v) if flip else v).contiguous())
    return views


def _decoded_scale(image, original_width):
    # draft() can decline (progressive/odd files); trust the decoded size, not the request.
    config = getattr(image, "decoderconfig", None) or (1,)
    s = int(config[0]) if config else 1
    return s if s in DRAFT_SCALES and (original_width + s - 1) // s == image.size[0] else 1


def crop_views(tensor, boxes, flips, crop_size):
    """Resized crops (bilinear, antialiased like PIL) and flips of one uint8 CHW image."""
    views = []
    for (top, left, h, w), flip in zip(boxes, flips):
        v = F.resized_crop(
            tensor,
            top,
            left,
            h,
            w,
            [crop_size, crop_size],
            interpolation=F.InterpolationMode.BILINEAR,
            antialias=True,
        )
        if flip:
            v = F.horizontal_flip(v)
        views.append(v.contiguous())
    return views


def _read_bytes(source):
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    with open(source, "rb") as f:
        return f.read()


class FastTwoCropTransform:
    """``callable(image) -> [q, k]``: two uint8 [3, crop_size, crop_size] views (crop + flip).

    ``image``: a PIL image (best lazily opened: ``Image.open(path)``), a file path, JPEG/PNG
    bytes, or a uint8 CHW tensor. Colour jitter, grayscale, blur and normalisation are NOT
    applied here: run ``DeviceAugment(aug, crop_size)`` on the batch on the device.

    ``decode="device"``: return ``(file bytes, crops int64 [2, 5])`` (top,
    left, h, w, flip per view), batched by ``pretrain.data.stack_views`` and decoded by
    ``decode_two_crops_on_device`` on the training device. The bytes come as an
    :class:`EncodedImage` with the file's name (its path, or ``name``), for the warning if they
    cannot be decoded.
    """

    def __init__(self, aug="v2", crop_size=224, scale=CROP_SCALE, decode="cpu"):
        if aug not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {aug!r}: use one of {AUGMENTATIONS}")
        if int(crop_size) < 8:
            raise ValueError(
                f"crop_size={crop_size} is too small; use at least 8 (224 in the paper)"
            )
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
        # The geometry of v1 and v2 is the same; ``aug`` only selects DeviceAugment's colour ops.
        self.aug, self.crop_size, self.scale, self.decode = (
            aug,
            int(crop_size),
            tuple(scale),
            decode,
        )

    def _draw(self, width, height):
        boxes = [sample_crop(width, height, self.scale) for _ in range(2)]
        flips = [sample_flip() for _ in range(2)]
        # Interleave like the reference (crop q, flip q, crop k, flip k) is not needed for the
        # distribution: the draws are independent and identically distributed either way.
        return boxes, flips

    # Datasets hand this transform the file path instead of a decoded image, so that it can
    # decode at reduced size (see pretrain/data/image_dataset.py).
    reads_files = True

    def __call__(self, image, name=None):
        """``name``: how to report ``image`` if it is bytes (a path names itself), e.g. a shard
        key."""
        if self.decode == "device":
            return self._encoded(image, name)
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3:
                raise TypeError(
                    f"expected a uint8 CHW image tensor, got {image.dtype} {tuple(image.shape)}"
                )
            boxes, flips = self._draw(image.shape[-1], image.shape[-2])
            return crop_views(image, boxes, flips, self.crop_size)
        if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
            return self._from_bytes(_read_bytes(image))
        if isinstance(image, Image.Image):
            boxes, flips = self._draw(*image.size)
            return views_from_pil(image, boxes, flips, self.crop_size)
        raise TypeError(
            f"FastTwoCropTransform takes a PIL image, a path, bytes or a uint8 tensor, "
            f"got {type(image).__name__}"
        )

    def _from_bytes(self, data):
        header = Image.open(io.BytesIO(data))  # reads the header only
        boxes, flips = self._draw(*header.size)
        if (
            header.format == "JPEG"
            and header.mode in ("RGB", "L")
            and draft_scale(boxes, self.crop_size) == 1
        ):
            # Full-size decode: libjpeg-turbo via torchvision is ~1.5x PIL + to-tensor.
            tensor = decode_jpeg(
                torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB
            )
            return crop_views(tensor, boxes, flips, self.crop_size)
        return views_from_pil(header, boxes, flips, self.crop_size)

    def _encoded(self, image, name=None):
        if isinstance(image, Image.Image):
            raise TypeError("decode='device' needs the file (path or bytes), not a PIL image")
        if name is None and isinstance(image, (str, os.PathLike)):
            name = os.fspath(image)
        data = _read_bytes(image)
        boxes, flips = self._draw(*Image.open(io.BytesIO(data)).size)
        crops = torch.tensor([list(b) + [int(f)] for b, f in zip(boxes, flips)], dtype=torch.int64)
        return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), name), crops

    def __repr__(self):
        return (
            f"{type(self).__name__}(aug={self.aug!r}, crop_size={self.crop_size}, "
            f"scale={self.scale}, decode={self.decode!r})"
        )


def collate_encoded(batch):
    """Batch ``decode="device"`` samples: (list of byte tensors, crops [N, 2, 5])."""
    return [data for data, _ in batch], torch.stack([crops for _, crops in batch])


class EncodedImage(NamedTuple):
    """A file's bytes (uint8 1-D tensor) and its name (path or shard key) for warnings.

    A named tuple: DataLoader workers, ``pin_memory`` and ``stack_views`` carry it through as is."""

    data: torch.Tensor
    name: Optional[str] = None


def _decode_one(data, label, device):
    """One file -> (image on ``device``, None), or (None, why) if no decoder can read it.

    The device decoder first (nvJPEG on CUDA), then torchvision on the CPU (PNG, GIF, WEBP, a
    JPEG nvJPEG refuses), then PIL: BMP, TIFF, PPM and the rest of what the folder scanner
    accepts, which torchvision cannot decode. Only then is the file unreadable.
    """
    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device), None
    except (RuntimeError, ValueError):
        pass
    try:
        return decode_image(data, mode=ImageReadMode.RGB).to(device), None
    except (RuntimeError, ValueError):
        pass
    try:
        image = load_rgb(data.numpy().tobytes(), name=label)
    except UnreadableImageError as e:
        cause = e.__cause__ or e
        return (
            None,
            f"no decoder could read its {data.numel()} bytes ({type(cause).__name__}: {cause})",
        )
    return F.pil_to_tensor(image).to(device), None


def decode_two_crops_on_device(data, crops, crop_size, device):
    """Decode a batch of files on ``device`` and cut the two views -> (q, k, failed).

    ``data``: :class:`EncodedImage` s (or bare uint8 1-D tensors of file bytes); ``crops``:
    [N, 2, 5] from ``FastTwoCropTransform``. The batch is decoded in one call (nvJPEG on CUDA);
    if that fails, file by file, with CPU and PIL fallbacks for what the device decoder refuses.
    A file nothing can decode is replaced by the batch's first readable one (a batch stays full,
    as MoCo's queue and BN assume); ``failed`` lists "path: reason" for each ("image i of a
    batch: reason" for bytes without a name).
    """
    device = torch.device(device)
    files, labels = [], []
    for i, item in enumerate(data):
        file, name = item if isinstance(item, tuple) else (item, None)
        files.append(file)
        labels.append(name if name is not None else f"image {i} of a batch")
    images, failed = _decode_batch(files, labels, device)
    readable = [i for i, im in enumerate(images) if im is not None]
    if not readable:
        raise RuntimeError(
            f"none of the {len(files)} images of a batch could be decoded (first: "
            f"{failed[0]}); check the files, or use data.decode=workers"
        )
    crops = crops.tolist()  # host-side parameters: no device sync
    views = [[], []]
    for i in range(len(files)):
        j = i if images[i] is not None else readable[0]
        for v, (top, left, h, w, flip) in enumerate(crops[j]):
            out = F.resized_crop(
                images[j],
                top,
                left,
                h,
                w,
                [crop_size, crop_size],
                interpolation=F.InterpolationMode.BILINEAR,
                antialias=True,
            )
            views[v].append(F.horizontal_flip(out) if flip else out)
    return torch.stack(views[0]), torch.stack(views[1]), failed


def _decode_batch(files, labels, device):
    """-> (images, with None for each unreadable file; "label: reason" for each of those)."""
    try:
        return decode_jpeg(files, mode=ImageReadMode.RGB, device=device), []
    except (RuntimeError, ValueError):
        pass  # not all JPEGs the device decoder takes: file by file, with the fallbacks
    images, failed = [], []
    for file, label in zip(files, labels):
        image, why = _decode_one(file, label, device)
        images.append(image)
        if image is None:
            failed.append(f"{label}: {why}")
    return images, failed
