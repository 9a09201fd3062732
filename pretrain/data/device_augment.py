"""Device half of the fast MoCo data path: per-pixel augmentations on a uint8 batch.

``DeviceAugment(aug, crop_size)`` takes the uint8 views of ``FastTwoCropTransform`` (crop and
flip already done) and applies, batched on whatever device they are on, the rest of the
reference recipe (``pretrain.data.augment``) with the same probabilities, ranges and order:

- v1: RandomGrayscale(0.2), then ColorJitter(0.4, 0.4, 0.4, 0.4); normalise.
- v2: RandomApply(ColorJitter(0.4, 0.4, 0.4, 0.1), p=0.8), RandomGrayscale(0.2),
  RandomApply(GaussianBlur(sigma 0.1..2), p=0.5); normalise.

ColorJitter semantics are torchvision's: per image a random order of the four ops
(``randperm(4)``) and factors b, c, s ~ U[1-x, 1+x], h ~ U[-x, x]; each op is torchvision's
formula on float images (blend with black / the mean grey level / the grey image; hue in HSV).
Every image gets its own parameters: they are drawn on the host from this module's own
generator (no device sync, the same augmentation on CPU and GPU), and each op runs once on the
subset of the batch that needs it at that position of its order. The blur is torchvision's
GaussianBlur with ``pretrain.data.augment``'s kernel size (23 px at 224) and reflect padding, as
two depthwise convolutions with one kernel per image. Unlike the PIL reference, values stay
float between ops (no rounding to uint8 after each op).
"""

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as nnf

from pretrain.data.augment import AUGMENTATIONS, IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size

BRIGHTNESS, CONTRAST, SATURATION, HUE = range(4)  # torchvision ColorJitter's fn_idx order
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision rgb_to_grayscale (ITU-R 601-2)


@dataclass(frozen=True)
class Recipe:
    jitter: tuple  # (brightness, contrast, saturation, hue) strengths
    jitter_p: float
    gray_p: float
    blur_p: float
    blur_sigma: tuple
    gray_first: bool  # v1 greys before the jitter, v2 after


RECIPES = {
    "v1": Recipe((0.4, 0.4, 0.4, 0.4), 1.0, 0.2, 0.0, (0.1, 2.0), True),
    "v2": Recipe((0.4, 0.4, 0.4, 0.1), 0.8, 0.2, 0.5, (0.1, 2.0), False),
    "crop": Recipe((0.0, 0.0, 0.0, 0.0), 0.0, 0.0, 0.0, (0.1, 2.0), False),  # no colour op at all
}


@dataclass
class AugParams:
    """One batch's draws, on the host. ``order[i]`` is image i's randperm(4) of the ops."""

    jitter_on: torch.Tensor  # bool [N]
    order: torch.Tensor  # int64 [N, 4]
    factors: torch.Tensor  # float [N, 4]: b, c, s, h
    gray_on: torch.Tensor  # bool [N]
    blur_on: torch.Tensor  # bool [N]
    sigma: torch.Tensor  # float [N]

    @classmethod
    def identity(cls, n):
        """No-op parameters: only the normalisation is left (used to compare with the reference)."""
        return cls(
            torch.zeros(n, dtype=torch.bool),
            torch.arange(4).repeat(n, 1),
            torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(n, 1),
            torch.zeros(n, dtype=torch.bool),
            torch.zeros(n, dtype=torch.bool),
            torch.ones(n),
        )


def sample_params(recipe, n, generator=None):
    """Per-image draws with the reference's distributions."""

    def u(lo, hi, size=(n,)):
        return torch.empty(size).uniform_(lo, hi, generator=generator)

    b, c, s, h = recipe.jitter
    factors = torch.stack([u(1 - b, 1 + b), u(1 - c, 1 + c), u(1 - s, 1 + s), u(-h, h)], dim=1)
    return AugParams(
        jitter_on=torch.rand(n, generator=generator) < recipe.jitter_p,
        order=torch.rand(n, 4, generator=generator).argsort(dim=1),  # a uniform permutation per row
        factors=factors,
        gray_on=torch.rand(n, generator=generator) < recipe.gray_p,
        blur_on=torch.rand(n, generator=generator) < recipe.blur_p,
        sigma=u(*recipe.blur_sigma),
    )


def to_grayscale(x):
    """[N, 3, H, W] float -> [N, 1, H, W] luma, torchvision's weights."""
    r, g, b = x.unbind(dim=1)
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b).unsqueeze(1)


def _col(v, x):
    return v.to(device=x.device, dtype=x.dtype, non_blocking=True).view(-1, 1, 1, 1)


def blend(x, other, factor):
    """torchvision's ``_blend`` with one factor per image: clamp(f * x + (1 - f) * other)."""
    f = _col(factor, x)
    return (f * x + (1.0 - f) * other).clamp_(0.0, 1.0)


def adjust_brightness(x, factor):
    return blend(x, 0.0, factor)


def adjust_contrast(x, factor):
    return blend(x, to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def adjust_saturation(x, factor):
    return blend(x, to_grayscale(x), factor)


def rgb_to_hsv(x):
    """[N, 3, H, W] -> h, s, v planes [N, H, W], h in [0, 1): torchvision's (Pillow's) formulas."""
    r, g, b = x.unbind(dim=1)
    minc, maxc = torch.aminmax(x, dim=1)
    delta = maxc - minc
    grey = delta == 0  # h and s are 0 there; the divisions below must not see 0
    safe_delta = torch.where(grey, 1.0, delta)
    s = delta / torch.where(maxc == 0, 1.0, maxc)
    rc, gc, bc = (maxc - r) / safe_delta, (maxc - g) / safe_delta, (maxc - b) / safe_delta
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(grey, 0.0, h).div_(6.0).remainder_(1.0)
    return h, s, maxc


def hsv_to_rgb(h, s, v):
    """Branch-free HSV -> RGB: c_n = v - v s clamp(min(k, 4 - k), 0, 1), k = (n + 6h) mod 6.

    The same values as torchvision's sector table (i = floor(6h); p, q, t), in a few fused-able
    elementwise ops instead of a gather over a [3, N, H, W] index.
    """
    h6, vs = h * 6.0, v * s
    out = []
    for n in (5.0, 3.0, 1.0):  # r, g, b
        k = (h6 + n).remainder_(6.0)
        out.append(v - vs * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0))
    return torch.stack(out, dim=1)


def adjust_hue(x, factor):
    """torchvision's adjust_hue (RGB -> HSV, h += factor mod 1, HSV -> RGB), per-image factor."""
    h, s, v = rgb_to_hsv(x)
    h = (h + _col(factor, x).view(-1, 1, 1)).remainder_(1.0)
    return hsv_to_rgb(h, s, v)


JITTER_OPS = {
    BRIGHTNESS: adjust_brightness,
    CONTRAST: adjust_contrast,
    SATURATION: adjust_saturation,
    HUE: adjust_hue,
}


def gaussian_kernels(sigma, size):
    """[N, size] normalised 1-d Gaussians, torchvision's ``_get_gaussian_kernel1d`` per sigma."""
    half = (size - 1) * 0.5
    x = torch.linspace(-half, half, steps=size)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None]) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def gaussian_blur(x, kernels):
    """Separable blur, one 1-d kernel [N, k] per image: depthwise convs, reflect padding
    (torchvision).
    """
    n, c, h, w = x.shape
    kernel_size = kernels.shape[1]
    # one kernel per (image, channel) group
    k = kernels.to(device=x.device, dtype=x.dtype, non_blocking=True).repeat_interleave(c, dim=0)
    pad = kernel_size // 2
    y = x.reshape(1, n * c, h, w)
    y = nnf.conv2d(
        nnf.pad(y, (pad, pad, 0, 0), mode="reflect"), k.view(n * c, 1, 1, kernel_size), groups=n * c
    )
    y = nnf.conv2d(
        nnf.pad(y, (0, 0, pad, pad), mode="reflect"), k.view(n * c, 1, kernel_size, 1), groups=n * c
    )
    return y.view(n, c, h, w)


def _stage(host_tensors, device):
    """All of a batch's host-side numbers to the device in ONE copy (pinned, asynchronous).

    One transfer instead of dozens, and pinned so the copy never waits on the device.
    """
    flat = (
        torch.cat([t.reshape(-1).float() for t in host_tensors]) if host_tensors else torch.zeros(0)
    )
    if device.type == "cuda":
        flat = flat.pin_memory()
    flat = flat.to(device, non_blocking=True)
    out, start = [], 0
    for t in host_tensors:
        out.append(flat[start : start + t.numel()].view(t.shape))
        start += t.numel()
    return out


class DeviceAugment(nn.Module):
    """uint8 [N, 3, S, S] views -> normalised float views, the reference's colour augmentations.

    ``seed``: seeds this module's host generator (give each rank its own); None draws the seed
    from the global torch generator, so ``torch.manual_seed`` makes runs repeatable.
    ``out_dtype``/``channels_last``: the layout the model wants (no extra copy later).
    """

    def __init__(
        self,
        aug="v2",
        crop_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        seed=None,
        out_dtype=torch.float32,
        channels_last=False,
    ):
        super().__init__()
        if aug not in RECIPES:
            raise ValueError(f"unknown augmentation {aug!r}: use one of {AUGMENTATIONS}")
        self.aug, self.recipe = aug, RECIPES[aug]
        self.kernel_size = blur_kernel_size(int(crop_size))  # the reference's kernel for this crop
        self.out_dtype, self.channels_last = out_dtype, channels_last
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.generator = torch.Generator()
        self.generator.manual_seed(
            int(torch.randint(0, 2**62, (1,))) if seed is None else int(seed)
        )

    def sample(self, n):
        return sample_params(self.recipe, n, self.generator)

    def plan(self, params):
        """The reference's op sequence for this batch: [(op, host mask, host values)], in order.

        op: "gray", "blur" (values = kernels) or one of JITTER_OPS (values = factors).
        """
        jitter = []
        for slot in range(4):
            op_at_slot = params.order[:, slot]
            for op in JITTER_OPS:
                mask = params.jitter_on & (op_at_slot == op)
                jitter.append((op, mask, params.factors[mask, op]))
        gray = [("gray", params.gray_on, None)]
        steps = gray + jitter if self.recipe.gray_first else jitter + gray
        if self.recipe.blur_p > 0:
            steps.append(
                (
                    "blur",
                    params.blur_on,
                    gaussian_kernels(params.sigma[params.blur_on], self.kernel_size),
                )
            )
        return [s for s in steps if bool(s[1].any())]

    @torch.no_grad()
    def forward(self, images, params=None):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise TypeError(
                "DeviceAugment expects uint8 [N, 3, H, W] views "
                "(FastTwoCropTransform's "
                f"output, batched), got {images.dtype} {tuple(images.shape)}"
            )
        steps = self.plan(self.sample(images.shape[0]) if params is None else params)
        host = []
        for _, mask, values in steps:
            host.append(torch.zeros(0) if bool(mask.all()) else mask.nonzero().flatten())
            host.append(torch.zeros(0) if values is None else values)
        staged = _stage(host, images.device)

        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = images.contiguous(memory_format=fmt).float().div_(255.0)
        for i, (op, _, _) in enumerate(steps):
            idx, values = staged[2 * i], staged[2 * i + 1]
            sub = x if idx.numel() == 0 else x.index_select(0, idx.long())
            if op == "gray":
                out = torch.empty_like(sub).copy_(to_grayscale(sub).expand_as(sub))
            elif op == "blur":
                out = gaussian_blur(sub, values)
            else:
                out = JITTER_OPS[op](sub, values)
            x = out if idx.numel() == 0 else x.index_copy_(0, idx.long(), out)
        x = (x - self.mean) / self.std
        return x.to(dtype=self.out_dtype, memory_format=fmt)

    def extra_repr(self):
        return f"aug={self.aug!r}, kernel_size={self.kernel_size}, out_dtype={self.out_dtype}"
