"""MoCo's pretraining augmentations, exactly as the reference ``main_moco.py``.

The paper-faithful path: PIL images and torchvision's (v1) transforms, which draw all
their randomness from the global ``torch`` generator (the loader seeds it per sample,
see ``pretrain/data/sampler.py``). A faster path lives elsewhere; keep this one plain.
The v2 blur is the reference's: PIL's GaussianBlur with sigma ~ U[0.1, 2] drawn from
Python's ``random`` (also seeded per sample). It is ~5x cheaper than torchvision's dense
23x23 kernel at 224 px; the device-side fast path (``pretrain/data/device_augment.py``) uses a
finite kernel of ``blur_kernel_size`` instead, which covers +-3 sigma for sigma <= 2.

- v1 (MoCo v1 paper, Sec. 4.1): RandomResizedCrop(scale 0.2..1), RandomGrayscale(0.2),
  ColorJitter(0.4, 0.4, 0.4, 0.4), horizontal flip.
- v2 "aug+" (MoCo v2 note, following SimCLR): ColorJitter(0.4, 0.4, 0.4, 0.1) with p=0.8,
  RandomGrayscale(0.2), GaussianBlur sigma in [0.1, 2.0] with p=0.5, horizontal flip.
- crop (not a paper recipe): RandomResizedCrop and horizontal flip only, for data whose colours
  carry no per-image shortcut (the demo's shared palette, README Status: with colour jitter on
  it the demo's short MoCo runs stayed below a random network).
"""

import random

from PIL import ImageFilter
from torchvision import transforms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

AUGMENTATIONS = ("v1", "v2", "crop")
CROP_SCALE = (0.2, 1.0)  # RandomResizedCrop's area range in both papers


def normalize():
    return transforms.Normalize(mean=IMAGENET_MEAN, std=IMAGENET_STD)


class GaussianBlur:
    """The reference ``moco/loader.py`` blur: PIL GaussianBlur, sigma ~ U[sigma_min, sigma_max]."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = tuple(sigma)

    def __call__(self, image):
        return image.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))

    def __repr__(self):
        return f"{type(self).__name__}(sigma={self.sigma})"


def blur_kernel_size(crop_size):
    """About 10% of the crop, odd (SimCLR's choice: 23 px at 224): the finite kernel of the
    device-side blur, which covers +-3 sigma for sigma <= 2 at 224."""
    k = max(3, int(round(0.1 * crop_size)))
    return k if k % 2 == 1 else k + 1


def moco_v1_augmentation(crop_size=224, scale=CROP_SCALE):
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(crop_size, scale=tuple(scale)),
            transforms.RandomGrayscale(p=0.2),
            transforms.ColorJitter(0.4, 0.4, 0.4, 0.4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize(),
        ]
    )


def crop_augmentation(crop_size=224, scale=CROP_SCALE):
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(crop_size, scale=tuple(scale)),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize(),
        ]
    )


def moco_v2_augmentation(crop_size=224, scale=CROP_SCALE):
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(crop_size, scale=tuple(scale)),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.RandomApply([GaussianBlur((0.1, 2.0))], p=0.5),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize(),
        ]
    )


class TwoCropsTransform:
    """Two independent augmentations of one image: the query and the key (MoCo Alg. 1)."""

    def __init__(self, base_transform):
        self.base_transform = base_transform

    def __call__(self, image):
        q = self.base_transform(image)
        k = self.base_transform(image)
        return [q, k]

    def __repr__(self):
        return f"{type(self).__name__}({self.base_transform!r})"


def build_augmentation(aug="v2", crop_size=224, scale=CROP_SCALE):
    """One view's augmentation: ``aug`` is "v1" (MoCo v1), "v2" (MoCo v2 "aug+") or "crop"."""
    builders = {"v1": moco_v1_augmentation, "v2": moco_v2_augmentation, "crop": crop_augmentation}
    if aug not in builders:
        raise ValueError(
            f"unknown augmentation {aug!r}: use one of {AUGMENTATIONS} "
            f"(v1 = MoCo v1 paper, v2 = MoCo v2 'aug+', crop = crops and flips only)"
        )
    return builders[aug](crop_size, scale)


def build_pretrain_transform(aug="v2", crop_size=224, scale=CROP_SCALE):
    """``callable(PIL image) -> [q, k]``, two float tensors [3, crop_size, crop_size].

    ``scale``: the crops' area range, (0.2, 1) in the papers.
    """
    if int(crop_size) < 8:
        raise ValueError(f"crop_size={crop_size} is too small; use at least 8 (224 in the paper)")
    lo, hi = scale
    if not 0 < lo <= hi <= 1:
        raise ValueError(
            f"crop scale {tuple(scale)} must satisfy 0 < min <= max <= 1 (area "
            "fractions; "
            f"the papers use (0.2, 1.0))"
        )
    return TwoCropsTransform(build_augmentation(aug, int(crop_size), scale))


def build_eval_transform(image_size=224):
    """Evaluation view (linear/kNN/supervised val): resize 1.14x (256 for 224), center crop."""
    return transforms.Compose(
        [
            transforms.Resize(int(round(image_size * 256 / 224))),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize(),
        ]
    )


LABELED_CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop default, as the reference lincls


def build_labeled_train_transform(image_size=224, scale=LABELED_CROP_SCALE, hflip=True):
    """Training view of the linear protocol and the supervised baseline: crop + flip.

    ``hflip=False`` for classes a mirror changes (digits: a mirrored 3 is no digit)."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size, scale=tuple(scale)),
            *([transforms.RandomHorizontalFlip()] if hflip else []),
            transforms.ToTensor(),
            normalize(),
        ]
    )
