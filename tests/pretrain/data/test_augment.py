"""MoCo v1/v2 augmentations: shapes, two different views, recipe probabilities, determinism."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from torchvision import transforms

from pretrain.data.augment import blur_kernel_size, build_pretrain_transform
from pretrain.data.sampler import seeded_rng


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    # A colourful image with structure, so jitter/grayscale/blur all change it visibly.
    arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    arr[:, :32, 0] = 250
    return Image.fromarray(arr)


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_two_views_have_the_crop_shape_and_differ(image, aug):
    t = build_pretrain_transform(aug, crop_size=32)
    torch.manual_seed(0)
    q, k = t(image)
    assert q.shape == k.shape == (3, 32, 32)
    assert q.dtype == torch.float32
    assert not torch.equal(q, k)


def test_same_seed_same_views_other_seed_other_views(image):
    t = build_pretrain_transform("v2", crop_size=24)
    with seeded_rng(123):
        a = t(image)
    with seeded_rng(123):
        b = t(image)
    with seeded_rng(124):
        c = t(image)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def _gray(x):
    return bool((x[0] * 0.229 + 0.485 - (x[1] * 0.224 + 0.456)).abs().max() < 1e-5)


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_grayscale_probability_is_about_0_2(image, aug):
    t = build_pretrain_transform(aug, crop_size=16)
    n = 400
    with seeded_rng(0):
        gray = sum(_gray(v) for _ in range(n // 2) for v in t(image))
    # Binomial(400, 0.2): mean 80, std 8; +-4 std.
    assert 48 <= gray <= 112, gray


def test_v2_recipe_blur_and_jitter_probabilities(image):
    t = build_pretrain_transform("v2", crop_size=32).base_transform
    steps = {type(s).__name__: s for s in t.transforms}
    applies = [s for s in t.transforms if isinstance(s, transforms.RandomApply)]
    assert [type(a.transforms[0]).__name__ for a in applies] == ["ColorJitter", "GaussianBlur"]
    assert [a.p for a in applies] == [0.8, 0.5]
    blur = applies[1].transforms[0]
    assert blur.sigma == (0.1, 2.0)
    # The reference blur: PIL's GaussianBlur with a random radius; a blurred image is smoother.
    from PIL import ImageStat

    with seeded_rng(2):
        blurred = blur(image)
    assert sum(ImageStat.Stat(blurred.filter(ImageFilter.FIND_EDGES)).mean) < sum(
        ImageStat.Stat(image.filter(ImageFilter.FIND_EDGES)).mean
    )
    assert steps["RandomResizedCrop"].scale == (0.2, 1.0)
    # Count how often RandomApply(blur) fires, by wrapping its decision (the real transform runs).
    fired = []
    original = applies[1].forward

    def counting(img):
        out = original(img)
        fired.append(out is not img)
        return out

    applies[1].forward = counting
    with seeded_rng(1):
        for _ in range(300):
            t(image)
    rate = sum(fired) / len(fired)
    assert 0.4 <= rate <= 0.6, rate


def test_blur_kernel_scales_with_crop_and_is_odd():
    assert blur_kernel_size(224) == 23
    assert blur_kernel_size(32) % 2 == 1 and blur_kernel_size(32) <= 5
    assert blur_kernel_size(96) % 2 == 1


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match="v1.*v2"):
        build_pretrain_transform("v3", 32)


@pytest.mark.parametrize("aug,hue,jitter_p", [("v1", 0.4, 1.0), ("v2", 0.1, 0.8)])
def test_colour_jitter_strengths_are_the_papers(aug, hue, jitter_p):
    """v1: ColorJitter(0.4, 0.4, 0.4, 0.4) always; v2: (0.4, 0.4, 0.4, 0.1) with p=0.8, then
    grayscale 0.2 and blur sigma 0.1-2 with p=0.5. Pinned as configured and as drawn."""
    steps = build_pretrain_transform(aug, crop_size=16).base_transform.transforms
    jitters = [s for s in steps if isinstance(s, transforms.ColorJitter)]
    applies = [s for s in steps if isinstance(s, transforms.RandomApply)]
    jitters += [
        a.transforms[0] for a in applies if isinstance(a.transforms[0], transforms.ColorJitter)
    ]
    (jitter,) = jitters
    assert (jitter.brightness, jitter.contrast, jitter.saturation) == ((0.6, 1.4),) * 3
    assert jitter.hue == (-hue, hue)
    assert [s.p for s in steps if isinstance(s, transforms.RandomGrayscale)] == [0.2]
    if aug == "v2":
        assert [(type(a.transforms[0]).__name__, a.p) for a in applies] == [
            ("ColorJitter", 0.8),
            ("GaussianBlur", 0.5),
        ]
        assert applies[1].transforms[0].sigma == (0.1, 2.0)

    # As drawn, through the whole pipeline. On a uniform grey image only brightness acts (contrast,
    # saturation, hue, grayscale, blur, crops leave it as it is): its factor is U[0.6, 1.4] when the
    # jitter applies, 1 when it does not. On a uniform orange only the hue op moves the hue.
    t = build_pretrain_transform(aug, crop_size=16)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])

    def colours(rgb, n=400):
        image = Image.new("RGB", (24, 24), rgb)
        with seeded_rng(0):
            views = [v for _ in range(n // 2) for v in t(image)]
        return torch.stack([(v.mean(dim=(1, 2)) * std + mean) * 255 for v in views])

    factor = colours((128, 128, 128))[:, 0] / 128
    assert 0.58 <= factor.min() <= 0.63 and 1.37 <= factor.max() <= 1.42, (
        factor.min(),
        factor.max(),
    )
    unchanged = float(((factor - 1).abs() < 0.004).float().mean())  # 1/255 of a step
    assert abs(unchanged - (1 - jitter_p)) < 0.07, unchanged
    orange = colours((153, 77, 38))
    # grayscale views left out
    coloured = orange[(orange.max(dim=1).values - orange.min(dim=1).values) > 20]
    shift = torch.tensor([_hue(c) - _hue(torch.tensor([153.0, 77.0, 38.0])) for c in coloured])
    shift = (shift + 0.5) % 1 - 0.5
    assert 0.9 * hue <= shift.abs().max() <= hue + 0.02, shift.abs().max()


def _hue(rgb):
    import colorsys

    return colorsys.rgb_to_hsv(*(float(x) / 255 for x in rgb))[0]


def test_crop_recipe_keeps_every_colour():
    """aug=crop: crops and flips only; a flat image keeps its colour (v1 and v2 jitter it)."""
    flat = Image.new("RGB", (40, 40), (200, 30, 90))
    expected = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(
        transforms.ToTensor()(Image.new("RGB", (16, 16), (200, 30, 90)))
    )
    with seeded_rng(0):
        views = [v for _ in range(20) for v in build_pretrain_transform("crop", crop_size=16)(flat)]
    assert all(torch.allclose(v, expected, atol=1e-6) for v in views)
    with seeded_rng(0):
        v1 = build_pretrain_transform("v1", crop_size=16)
        jittered = [v for _ in range(20) for v in v1(flat)]
    assert not all(torch.allclose(v, expected, atol=1e-6) for v in jittered)
    with pytest.raises(ValueError, match="crop = crops and flips only"):
        build_pretrain_transform("v3", crop_size=16)
