"""Fast CPU data path: same crop/flip distribution as the reference, reduced-size decode, inputs."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import ks_2samp
from torchvision import transforms

from pretrain.data.device_augment import DeviceAugment
from pretrain.data.fast_augment import (
    FastTwoCropTransform,
    collate_encoded,
    decode_two_crops_on_device,
    draft_scale,
    scale_box,
)

W, H = 256, 200  # coordinates fit in uint8, so pixels can say where they came from


@pytest.fixture(scope="module")
def coord_image():
    """R = x, G = y, B = 128: a crop's pixel values reveal its box and its flip."""
    x, y = np.meshgrid(np.arange(W), np.arange(H))
    return Image.fromarray(np.stack([x, y, np.full_like(x, 128)], -1).astype(np.uint8))


def smooth_jpeg(w, h, seed=0, quality=95):
    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(
        (w, h), Image.BICUBIC
    )
    buf = io.BytesIO()
    low.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def box_stats(view):
    """-> (area fraction, aspect ratio w/h, flipped) recovered from a coordinate-image crop."""
    v = (
        view.to(torch.float32)
        if isinstance(view, torch.Tensor)
        else torch.from_numpy(np.asarray(view, dtype=np.float32)).permute(2, 0, 1)
    )
    xs, ys = v[0], v[1]
    w = xs.max() - xs.min() + 1
    h = ys.max() - ys.min() + 1
    flipped = bool(xs[:, 0].mean() > xs[:, -1].mean())
    return float(w * h / (W * H)), float(w / h), flipped


def test_crop_and_flip_distribution_matches_reference(coord_image):
    size, n = 32, 300
    reference = transforms.Compose(
        [transforms.RandomResizedCrop(size, scale=(0.2, 1.0)), transforms.RandomHorizontalFlip()]
    )
    fast = FastTwoCropTransform("v2", size)
    torch.manual_seed(0)
    ref = [box_stats(reference(coord_image)) for _ in range(n)]
    ours = [box_stats(v) for _ in range(n // 2) for v in fast(coord_image)]
    for i, name in enumerate(("area fraction", "aspect ratio")):
        a, b = [s[i] for s in ref], [s[i] for s in ours]
        assert ks_2samp(a, b).pvalue > 1e-3, f"{name} distributions differ"
        assert abs(np.median(a) - np.median(b)) < 0.1 * np.median(a)
    areas = [s[0] for s in ours]
    assert 0.18 < min(areas) and max(areas) <= 1.0 + 1e-6  # scale (0.2, 1), edge pixels blur a bit
    flips = np.mean([s[2] for s in ours])
    assert 0.4 < flips < 0.6


def test_views_are_uint8_and_independent(coord_image):
    q, k = FastTwoCropTransform("v1", 24)(coord_image)
    assert q.dtype == k.dtype == torch.uint8 and q.shape == k.shape == (3, 24, 24)
    assert q.is_contiguous() and not torch.equal(q, k)


def test_draft_scale_keeps_every_crop_at_least_crop_size():
    assert draft_scale([(0, 0, 500, 500), (0, 0, 300, 400)], 64) == 4  # 300 / 4 = 75 >= 64
    assert draft_scale([(0, 0, 500, 500), (0, 0, 100, 400)], 64) == 1
    assert draft_scale([(0, 0, 4000, 4000)] * 2, 64) == 8  # libjpeg's coarsest scale
    # PIL (left, upper, right, lower)
    assert scale_box((10, 20, 300, 400), 2) == (10.0, 5.0, 210.0, 155.0)


def test_reduced_size_decode_gives_the_same_crops_as_a_full_decode():
    data = smooth_jpeg(1024, 768)
    fast = FastTwoCropTransform("v2", 48)
    decoded_widths = []
    for seed in range(4):
        torch.manual_seed(seed)
        lazy = Image.open(io.BytesIO(data))
        drafted = fast(lazy)  # lazy JPEG: decoded at 1/2 .. 1/8
        decoded_widths.append(lazy.size[0])
        torch.manual_seed(seed)
        full = fast(Image.open(io.BytesIO(data)).convert("RGB"))  # already decoded: full size
        for a, b in zip(drafted, full):
            # Same box (a wrong mapping would shift the crop by tens of pixels), finer decode.
            assert (a.float() - b.float()).abs().mean() < 1.0
    assert min(decoded_widths) <= 1024 // 2  # the reduced decode did happen


def test_all_input_kinds_give_the_same_views(tmp_path):
    data = smooth_jpeg(320, 240, seed=1)
    path = tmp_path / "a.jpg"
    path.write_bytes(data)
    fast = FastTwoCropTransform("v2", 32)
    outs = []
    for source in (str(path), data, Image.open(io.BytesIO(data))):
        torch.manual_seed(7)
        outs.append(fast(source))
    # path and bytes share the decoder; the PIL image uses Pillow's (IDCT rounding differs).
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert all((a.float() - b.float()).abs().mean() < 2.0 for a, b in zip(outs[0], outs[2]))
    torch.manual_seed(7)
    tensor_views = fast(torch.from_numpy(np.array(Image.open(io.BytesIO(data)))).permute(2, 0, 1))
    assert tensor_views[0].shape == (3, 32, 32)


def test_bad_inputs_say_what_to_do():
    with pytest.raises(ValueError, match="unknown augmentation"):
        FastTwoCropTransform("v3", 224)
    with pytest.raises(ValueError, match="too small"):
        FastTwoCropTransform("v2", 4)
    with pytest.raises(TypeError, match="PIL image, a path"):
        FastTwoCropTransform("v2", 32)(42)
    with pytest.raises(TypeError, match="uint8 CHW"):
        FastTwoCropTransform("v2", 32)(torch.zeros(3, 40, 40))
    with pytest.raises(ValueError, match="decode must be one of"):
        FastTwoCropTransform("v2", 32, decode="gpu")
    with pytest.raises(TypeError, match="needs the file"):
        FastTwoCropTransform("v2", 32, decode="device")(Image.new("RGB", (40, 40)))


def png_bytes(w, h, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_decode_on_the_device_gives_the_workers_views():
    # 64 px crops of <= 100 px images: no reduced-size decode, so both paths decode fully with
    # libjpeg and must agree exactly (on a GPU nvJPEG would differ by IDCT rounding only).
    files = [smooth_jpeg(100, 80, seed=i) for i in range(3)] + [png_bytes(90, 70)]
    workers, device = (
        FastTwoCropTransform("v2", 64),
        FastTwoCropTransform("v2", 64, decode="device"),
    )
    expected, encoded = [], []
    for i, data in enumerate(files):
        torch.manual_seed(i)
        expected.append(workers(data))
        torch.manual_seed(i)
        encoded.append(device(data))
    data, crops = collate_encoded(encoded)
    assert crops.shape == (4, 2, 5) and all(
        d.data.dtype == torch.uint8 and d.data.ndim == 1 for d in data
    )
    q, k, failed = decode_two_crops_on_device(data, crops, 64, "cpu")
    assert failed == [] and q.shape == k.shape == (4, 3, 64, 64) and q.dtype == torch.uint8
    for i, (eq, ek) in enumerate(expected):  # the PNG came through the CPU fallback
        assert torch.equal(q[i], eq) and torch.equal(k[i], ek), i


def test_device_decode_replaces_an_unreadable_file_and_reports_it():
    good, whole = smooth_jpeg(100, 80, seed=1), smooth_jpeg(100, 80, seed=2)
    bad = whole[: len(whole) // 2]  # truncated: the header reads, the pixels do not
    t = FastTwoCropTransform("v2", 32, decode="device")
    torch.manual_seed(0)
    data, crops = collate_encoded([t(good), t(bad), t(good)])
    q, k, failed = decode_two_crops_on_device(data, crops, 32, "cpu")
    assert q.shape == (3, 3, 32, 32)  # the batch stays full
    assert len(failed) == 1 and failed[0].startswith("image 1 of a batch")
    assert torch.equal(q[1], q[0]) and torch.equal(k[1], k[0])  # replaced by the first readable one
    with pytest.raises(RuntimeError, match="none of the 2 images"):
        decode_two_crops_on_device(data[1:2] * 2, crops[:2], 32, "cpu")


def image_bytes(fmt, w=90, h=70, seed=0):
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, fmt)
    return buf.getvalue()


def test_device_decode_reads_what_torchvision_cannot_with_pil(tmp_path):
    # BMP, TIFF and PPM: the folder scanner takes them, torchvision's decoders do not. They must
    # decode (via PIL) to the very views the workers path cuts from the same crops.
    workers, device = (
        FastTwoCropTransform("v2", 32),
        FastTwoCropTransform("v2", 32, decode="device"),
    )
    expected, encoded = [], []
    for i, fmt in enumerate(("BMP", "TIFF", "PPM")):
        path = tmp_path / f"{i}.{fmt.lower()}"
        path.write_bytes(image_bytes(fmt, seed=i))
        torch.manual_seed(i)
        expected.append(workers(str(path)))
        torch.manual_seed(i)
        encoded.append(device(str(path)))
    q, k, failed = decode_two_crops_on_device(*collate_encoded(encoded), 32, "cpu")
    assert failed == []
    for i, (eq, ek) in enumerate(expected):
        assert torch.equal(q[i], eq) and torch.equal(k[i], ek), i


def test_device_decode_warnings_name_the_file(tmp_path, caplog):
    # Through a real loader (one worker process: the name must survive the trip) to the
    # main process' skip report, as in train.py.
    from pretrain.data import build_pretrain_loader

    for i in range(3):
        (tmp_path / f"good_{i}.jpg").write_bytes(smooth_jpeg(80, 60, seed=i))
    whole = smooth_jpeg(80, 60, seed=9)
    (tmp_path / "truncated.jpg").write_bytes(
        whole[: len(whole) // 2]
    )  # header reads, pixels do not
    loader = build_pretrain_loader(
        tmp_path,
        crop_size=32,
        batch_size=4,
        num_workers=1,
        transform=FastTwoCropTransform("v2", 32, decode="device"),
    )
    loader.set_epoch(0)
    ((data, crops),) = list(loader)
    q, k, failed = decode_two_crops_on_device(data, crops, 32, "cpu")
    assert q.shape == (4, 3, 32, 32)
    bad = str(tmp_path / "truncated.jpg")
    good, bytes_of_bad = (
        (tmp_path / "good_0.jpg").read_bytes(),
        (tmp_path / "truncated.jpg").read_bytes(),
    )
    assert len(failed) == 1 and failed[0].startswith(bad + ": no decoder could read its ")
    loader.report_skipped(failed)
    assert loader.skipped == 1 and bad in caplog.text
    # Bytes name themselves only if told (a shard sample: its url and key).
    t = FastTwoCropTransform("v2", 32, decode="device")
    _, _, failed = decode_two_crops_on_device(
        *collate_encoded([t(good), t(bytes_of_bad, name="s.tar:7.jpg")]), 32, "cpu"
    )
    assert len(failed) == 1 and failed[0].startswith("s.tar:7.jpg: no decoder could read its ")
    alone = collate_encoded([t(bad)])
    with pytest.raises(RuntimeError, match="none of the 1 images.*truncated.jpg"):
        decode_two_crops_on_device(*alone, 32, "cpu")


def test_pretrain_loader_with_fast_transform_then_device_augment(tmp_path):
    from pretrain.data import build_pretrain_loader

    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes(smooth_jpeg(80, 60, seed=i))
    loader = build_pretrain_loader(
        tmp_path,
        aug="v2",
        crop_size=32,
        batch_size=3,
        num_workers=0,
        transform=FastTwoCropTransform("v2", 32),
    )
    q, k = next(iter(loader))
    assert q.dtype == torch.uint8 and q.shape == (3, 3, 32, 32)
    x = DeviceAugment("v2", 32, seed=0)(q)
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32) and torch.isfinite(x).all()


def test_pretrain_loader_lets_the_fast_transform_decode_at_reduced_size(tmp_path, monkeypatch):
    from pretrain.data import build_pretrain_loader

    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (384, 512, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.jpg", quality=90
        )
    from PIL import JpegImagePlugin

    drafts = []
    original = JpegImagePlugin.JpegImageFile.draft

    def recording_draft(self, mode, size):  # records, then does the real thing
        drafts.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", recording_draft)
    loader = build_pretrain_loader(
        str(tmp_path),
        crop_size=16,
        batch_size=4,
        num_workers=0,
        transform=FastTwoCropTransform("v2", 16),
    )
    loader.set_epoch(0)
    ((q, k),) = list(loader)
    assert q.dtype == torch.uint8 and q.shape == (4, 3, 16, 16) and k.shape == q.shape
    # 16-px crops of a 512x384 JPEG never need full resolution: every file was decoded smaller.
    assert len(drafts) == 4 and all(w < 512 for w, _ in drafts)
