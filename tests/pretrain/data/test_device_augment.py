"""Batched device augmentations: torchvision's ops, its random order, the reference's
distributions."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as F
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import transforms

from pretrain.data.augment import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size
from pretrain.data.device_augment import (
    BRIGHTNESS,
    CONTRAST,
    HUE,
    RECIPES,
    SATURATION,
    AugParams,
    DeviceAugment,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    gaussian_blur,
    gaussian_kernels,
    sample_params,
)

S = 32


# Small tensors: on a 2-core machine a second intra-op thread only adds waiting.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch():
    """8 colourful uint8 images with structure (smooth blobs + edges)."""
    rng = np.random.default_rng(0)
    imgs = []
    for _ in range(8):
        low = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(
            (S, S), Image.BICUBIC
        )
        arr = np.array(low)
        arr[:, : S // 3] = rng.integers(0, 256, 3)
        imgs.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(imgs)


def normalized(x_float):
    return F.normalize(x_float, list(IMAGENET_MEAN), list(IMAGENET_STD))


def test_each_op_is_torchvisions_with_a_factor_per_image(batch):
    x = batch.float() / 255
    f = torch.linspace(0.6, 1.4, 8)
    h = torch.linspace(-0.5, 0.5, 8)
    for ours, theirs, fac in [
        (adjust_brightness, F.adjust_brightness, f),
        (adjust_contrast, F.adjust_contrast, f),
        (adjust_saturation, F.adjust_saturation, f),
        (adjust_hue, F.adjust_hue, h),
    ]:
        expected = torch.stack([theirs(x[i], float(fac[i])) for i in range(8)])
        torch.testing.assert_close(ours(x, fac), expected, atol=1e-5, rtol=0)
    sigma = torch.linspace(0.1, 2.0, 8)
    expected = torch.stack([F.gaussian_blur(x[i], [7, 7], [float(sigma[i])] * 2) for i in range(8)])
    torch.testing.assert_close(
        gaussian_blur(x, gaussian_kernels(sigma, 7)), expected, atol=1e-5, rtol=0
    )


def test_identity_params_leave_only_the_reference_normalisation(batch):
    for aug in ("v1", "v2"):
        out = DeviceAugment(aug, S)(batch, AugParams.identity(8))
        torch.testing.assert_close(out, normalized(batch.float() / 255), atol=1e-6, rtol=0)


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_per_image_random_order_matches_sequential_torchvision(batch, aug):
    """Image i gets its own permutation of the 4 jitter ops, grayscale before (v1) or after (v2)."""
    n = 8
    gen = torch.Generator().manual_seed(1)
    params = AugParams(
        jitter_on=torch.tensor([True] * 7 + [False]),
        order=torch.stack([torch.randperm(4, generator=gen) for _ in range(n)]),
        factors=torch.stack(
            [torch.empty(n).uniform_(0.6, 1.4, generator=gen) for _ in range(3)]
            + [torch.empty(n).uniform_(-0.1, 0.1, generator=gen)],
            dim=1,
        ),
        gray_on=torch.tensor([False, True] * 4),
        blur_on=torch.tensor([True, True, False, False] * 2),
        sigma=torch.empty(n).uniform_(0.1, 2.0, generator=gen),
    )
    ops = {
        BRIGHTNESS: F.adjust_brightness,
        CONTRAST: F.adjust_contrast,
        SATURATION: F.adjust_saturation,
        HUE: F.adjust_hue,
    }
    k = blur_kernel_size(S)
    expected = []
    for i in range(n):
        x = batch[i].float() / 255
        gray = (  # noqa: E731
            lambda v, i=i: F.rgb_to_grayscale(v, num_output_channels=3) if params.gray_on[i] else v
        )
        if aug == "v1":
            x = gray(x)
        if params.jitter_on[i]:
            for op in params.order[i].tolist():
                x = ops[op](x, float(params.factors[i, op]))
        if aug == "v2":
            x = gray(x)
            if params.blur_on[i]:
                x = F.gaussian_blur(x, [k, k], [float(params.sigma[i])] * 2)
        expected.append(normalized(x))
    out = DeviceAugment(aug, S)(batch, params)
    torch.testing.assert_close(out, torch.stack(expected), atol=2e-5, rtol=0)


def test_sampled_probabilities_ranges_and_orders_are_the_recipes():
    gen = torch.Generator().manual_seed(0)
    for aug, jitter_p, blur_p in (("v1", 1.0, 0.0), ("v2", 0.8, 0.5)):
        p = sample_params(RECIPES[aug], 20000, gen)
        assert abs(p.jitter_on.float().mean() - jitter_p) < 0.015
        assert abs(p.gray_on.float().mean() - 0.2) < 0.015
        assert abs(p.blur_on.float().mean() - blur_p) < 0.015
        hue = RECIPES[aug].jitter[3]
        assert p.factors[:, :3].min() >= 0.6 and p.factors[:, :3].max() <= 1.4
        assert p.factors[:, 3].abs().max() <= hue and p.factors[:, 3].abs().max() > 0.95 * hue
        assert 0.1 <= p.sigma.min() and p.sigma.max() <= 2.0
        assert (p.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
        counts = torch.stack([(p.order == op).float().mean(0) for op in range(4)])  # op x slot
        assert (counts - 0.25).abs().max() < 0.02  # every op equally likely at every position


def _stats(x):
    """Per image: mean brightness, saturation proxy (channel spread), greyness, sharpness."""
    lum = x.mean(dim=1, keepdim=True)
    lap = nnf.conv2d(lum, torch.tensor([[[[0, 1, 0], [1, -4, 1], [0, 1, 0]]]], dtype=x.dtype))
    return {
        "brightness": lum.mean(dim=(1, 2, 3)),
        "saturation": x.std(dim=1).mean(dim=(1, 2)),
        "grey": (x.std(dim=1).amax(dim=(1, 2)) < 0.02).float(),
        "sharpness": lap.pow(2).mean(dim=(1, 2, 3)) / lum.var(dim=(1, 2, 3)).clamp_min(1e-6),
    }


@pytest.mark.parametrize("aug", ["v1", "v2"])
def test_distribution_matches_the_reference_pil_pipeline(batch, aug):
    """Same images through torchvision's PIL transforms (the reference) and DeviceAugment."""
    n_rep = 40
    ref_tf = transforms.Compose(
        (
            [transforms.RandomGrayscale(0.2), transforms.ColorJitter(0.4, 0.4, 0.4, 0.4)]
            if aug == "v1"
            else [
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                transforms.RandomGrayscale(0.2),
                transforms.RandomApply(
                    [transforms.GaussianBlur(blur_kernel_size(S), (0.1, 2.0))], p=0.5
                ),
            ]
        )
        + [transforms.ToTensor()]
    )
    torch.manual_seed(0)
    pils = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in batch]
    ref = torch.stack([ref_tf(p) for _ in range(n_rep) for p in pils])
    ours = DeviceAugment(aug, S, seed=0)(batch.repeat(n_rep, 1, 1, 1))
    ours = ours * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(
        1, 3, 1, 1
    )
    a, b = _stats(ref), _stats(ours)
    for key in ("brightness", "saturation", "sharpness"):
        # rounded: grey images are exactly 0 in uint8 PIL, ~1e-9 after our float round trip
        ra, rb = np.round(a[key].numpy(), 3), np.round(b[key].numpy(), 3)
        assert ks_2samp(ra, rb).pvalue > 1e-3, key
    assert abs(a["grey"].mean() - b["grey"].mean()) < 0.07 and abs(b["grey"].mean() - 0.2) < 0.07
    # final per-channel statistics after normalisation agree
    ref_n = normalized(ref)
    ours_n = normalized(ours)
    torch.testing.assert_close(
        ours_n.mean(dim=(0, 2, 3)), ref_n.mean(dim=(0, 2, 3)), atol=0.08, rtol=0
    )
    torch.testing.assert_close(
        ours_n.std(dim=(0, 2, 3)), ref_n.std(dim=(0, 2, 3)), atol=0.08, rtol=0
    )


def test_moco_loss_is_the_same_with_the_fast_normalisation(batch):
    from pretrain.model.moco import MoCo

    to_reference = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    )
    reference = torch.stack(
        [to_reference(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in batch]
    )
    fast = DeviceAugment("v2", S)(batch, AugParams.identity(8))
    torch.manual_seed(0)
    model = MoCo("resnet18", dim=16, K=32, m=0.99, T=0.2, mlp=True, shuffle="off").eval()
    losses = []
    for x in (reference, fast):
        logits, labels = copy.deepcopy(model)(x, x.flip(-1))
        losses.append(nnf.cross_entropy(logits, labels))
    torch.testing.assert_close(losses[0], losses[1], atol=1e-5, rtol=0)


def test_options_and_errors(batch):
    out = DeviceAugment("v2", S, out_dtype=torch.bfloat16, channels_last=True, seed=3)(batch)
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    a = DeviceAugment("v2", S, seed=5)(batch)
    b = DeviceAugment("v2", S, seed=5)(batch)
    assert torch.equal(a, b) and not torch.equal(a, DeviceAugment("v2", S, seed=6)(batch))
    with pytest.raises(TypeError, match="uint8"):
        DeviceAugment("v2", S)(batch.float())
    with pytest.raises(ValueError, match="unknown augmentation"):
        DeviceAugment("v9", S)


def test_crop_recipe_changes_no_colour(batch):
    """aug=crop: the sampled draws switch every colour op off (only the normalisation is left)."""
    out = DeviceAugment("crop", S, seed=0)(batch)
    torch.testing.assert_close(out, normalized(batch.float() / 255), atol=1e-6, rtol=0)
    assert not torch.allclose(DeviceAugment("v2", S, seed=0)(batch), out, atol=1e-3)
