"""The in-memory data path: images decoded once, both views augmented in batches, runs that
resume exactly (randomness a function of seed, rank, epoch and iteration)."""

import math

import numpy as np
import pytest
import torch

from pretrain.data.folder import DataPathError
from pretrain.data.memory import (
    MemoryPretrainLoader,
    crop_resize_flip,
    load_images,
    sample_boxes,
)
from pretrain.engine.config import ConfigError, load_config
from pretrain.engine.train import train
from pretrain.io import safe_torch_load


def test_images_are_decoded_once_into_one_uint8_tensor(tiny_demo_data):
    images = load_images(tiny_demo_data["unlabeled_train"])
    assert images.dtype == torch.uint8 and images.shape == (160, 3, 64, 64)
    assert images.float().std() > 10  # real pictures, not an empty buffer
    assert load_images(tiny_demo_data["unlabeled_train"], size=32).shape == (160, 3, 32, 32)


def test_mixed_sizes_without_memory_size_are_a_clear_error(tiny_demo_data, tmp_path):
    from PIL import Image

    src = sorted(
        p for p in __import__("pathlib").Path(tiny_demo_data["unlabeled_train"]).rglob("*.jpg")
    )
    for i, p in enumerate(src[:3]):
        Image.open(p).resize((64, 64) if i else (40, 40)).save(tmp_path / f"{i}.jpg")
    with pytest.raises(DataPathError, match="memory_size"):
        load_images(tmp_path)


def test_a_full_box_is_the_image_and_a_flip_mirrors_it():
    images = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]] * 2)
    same = crop_resize_flip(images, full, torch.tensor([False, False]), 16)
    assert torch.equal(same, images)
    flipped = crop_resize_flip(images, full, torch.tensor([True, False]), 16)
    assert torch.equal(flipped[0], images[0].flip(-1)) and torch.equal(flipped[1], images[1])
    # The left half, upscaled 2x: its pixel columns 0..7 become 16 columns.
    left = crop_resize_flip(
        images, torch.tensor([[0.25, 0.5, 0.5, 1.0]] * 2), torch.tensor([False, False]), 16
    )
    assert (left.float() - images[..., :8].float().repeat_interleave(2, -1)).abs().max() <= 128
    assert (left.float().mean() - images[..., :8].float().mean()).abs() < 3


def test_boxes_follow_random_resized_crops_area_and_ratio():
    g = torch.Generator().manual_seed(0)
    cx, cy, w, h = sample_boxes(20000, (0.2, 1.0), g).unbind(1)
    area = w * h
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1.0 + 1e-6
    assert ((w / h).log().abs() <= math.log(4 / 3) * 2 + 1e-5).all()
    assert (cx - w / 2 >= -1e-6).all() and (cx + w / 2 <= 1 + 1e-6).all()
    assert (cy - h / 2 >= -1e-6).all() and (cy + h / 2 <= 1 + 1e-6).all()
    # ~U(0.2, 1), a little less where boxes were shrunk to fit
    assert 0.55 < float(area.mean()) < 0.62


def loader(images, **kw):
    return MemoryPretrainLoader(
        images, aug="v2", crop_size=16, scale=(0.2, 1.0), batch_size=4, **kw
    )


def test_batches_are_a_function_of_seed_epoch_and_iteration():
    images = torch.randint(0, 256, (20, 3, 24, 24), dtype=torch.uint8)
    a = loader(images)
    assert len(a) == 5
    a.set_epoch(1)
    straight = list(a)
    q, k = straight[0]
    assert q.shape == k.shape == (4, 3, 16, 16) and q.dtype == torch.float32
    assert not torch.equal(q, k)  # two independent views
    a.set_epoch(1, start_iter=3)  # a resumed epoch: the same batches from iteration 3
    resumed = list(a)
    assert len(resumed) == 2
    for (q1, k1), (q2, k2) in zip(straight[3:], resumed):
        assert torch.equal(q1, q2) and torch.equal(k1, k2)
    a.set_epoch(2)
    assert not torch.equal(next(iter(a))[0], q)
    other_seed = loader(images, seed=1)
    other_seed.set_epoch(1)
    assert not torch.equal(next(iter(other_seed))[0], q)


def test_ranks_split_one_epoch_order():
    images = torch.randint(0, 256, (40, 3, 24, 24), dtype=torch.uint8)
    orders = [loader(images, rank=r, world_size=2).epoch_order(0) for r in range(2)]
    assert orders[0].shape == (5, 4)
    everything = torch.cat([o.flatten() for o in orders])
    assert len(set(everything.tolist())) == 40  # disjoint, and together the whole set


def tiny_cfg(**top):
    cfg = {
        "model": {"arch": "resnet18", "dim": 16, "K": 40, "mlp": True, "T": 0.2, "bn_splits": 2},
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "in_memory": True},
        "optim": {"lr": 0.05, "base_batch_size": 8, "epochs": 2, "schedule": "cosine"},
        "batch_size": 8,
        "checkpoint": {"every_iters": 3, "keep_last": 10},
        "log": {"every_iters": 1, "tensorboard": False},
        "deterministic": True,
        "device": "cpu",
    }
    cfg.update(top)
    return load_config(None, cfg)


def test_an_in_memory_run_resumes_exactly(tiny_demo_data, tmp_path, one_thread):
    data = tiny_demo_data["unlabeled_root"]  # 160 images: 20 iterations per epoch
    straight = train(tiny_cfg(max_iters=5), data, tmp_path / "straight")
    train(tiny_cfg(max_iters=3), data, tmp_path / "resumed")
    second = train(tiny_cfg(max_iters=5), data, tmp_path / "resumed", resume="auto")
    assert second["resumed_from"].endswith("checkpoint_0000003.pth")
    assert straight["global_step"] == second["global_step"] == 5
    a = safe_torch_load(tmp_path / "straight" / "checkpoint_0000005.pth")
    b = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000005.pth")
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    first = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000003.pth")
    assert not torch.equal(
        first["state_dict"]["module.encoder_q.conv1.weight"],
        b["state_dict"]["module.encoder_q.conv1.weight"],
    )


def test_in_memory_with_device_decoding_is_refused():
    with pytest.raises(ConfigError, match="in_memory"):
        load_config(None, {"data": {"in_memory": True, "decode": "device"}})


def test_queue_of_real_keys_before_the_first_step(tiny_demo_data, tmp_path, one_thread):
    from pretrain.model.moco import MoCo
    from pretrain.model.queue_fill import fill_queue_with_keys

    torch.manual_seed(0)
    model = MoCo(arch="resnet18", dim=16, K=40, mlp=True, bn_splits=2)
    random_cos = (model.queue.T @ model.queue).mean()
    data = MemoryPretrainLoader(
        load_images(tiny_demo_data["unlabeled_train"]), crop_size=32, batch_size=8
    )
    rng = torch.get_rng_state()
    assert fill_queue_with_keys(model, data, epoch=2, views=lambda q, k: (q, k)) == 40
    assert torch.equal(torch.get_rng_state(), rng)  # the run's global stream is untouched
    assert model.queue_ptr.item() == 0
    assert torch.allclose(model.queue.norm(dim=0), torch.ones(40), atol=1e-5)
    # A random network's keys of real images lie in a narrow cone; random unit vectors do not.
    assert (model.queue.T @ model.queue).mean() > random_cos + 0.3
    # In a run: the queue is filled once, before step 1, and the run still resumes exactly.
    cfg = {
        "model": {
            "arch": "resnet18",
            "dim": 16,
            "K": 40,
            "mlp": True,
            "T": 0.2,
            "bn_splits": 2,
            "queue_init": "keys",
        }
    }
    straight = train(
        tiny_cfg(max_iters=4, **cfg), tiny_demo_data["unlabeled_root"], tmp_path / "straight"
    )
    train(tiny_cfg(max_iters=2, **cfg), tiny_demo_data["unlabeled_root"], tmp_path / "resumed")
    second = train(
        tiny_cfg(max_iters=4, **cfg),
        tiny_demo_data["unlabeled_root"],
        tmp_path / "resumed",
        resume=str(tmp_path / "resumed" / "checkpoint_0000002.pth"),
    )
    assert straight["global_step"] == second["global_step"] == 4
    a = safe_torch_load(tmp_path / "straight" / "checkpoint_0000004.pth")["state_dict"]
    b = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000004.pth")["state_dict"]
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_group_partners_stay_in_their_group():
    from pretrain.data.memory import GroupPartners

    groups = torch.tensor([2, 0, 2, 1, 0, 2])  # group 1 holds one image only
    partners = GroupPartners(groups)
    index = torch.arange(6).repeat(200)
    drawn = partners(index, torch.Generator().manual_seed(0))
    assert torch.equal(groups[drawn], groups[index])
    assert torch.equal(drawn[index == 3], torch.full(((index == 3).sum(),), 3))
    for i in (0, 2, 5):  # every member of group 2 is drawn for each of its images
        assert set(drawn[index == i].tolist()) == {0, 2, 5}


def test_folder_positives_take_the_key_from_another_image_of_the_folder(tmp_path):
    from PIL import Image

    from pretrain.data.memory import build_memory_loader

    for g in range(4):  # DATA/<instance>/<view>.png, every pixel = 10 * instance + view
        for v in range(2):
            (tmp_path / f"inst{g}").mkdir(exist_ok=True)
            Image.new("RGB", (16, 16), (10 * g + v,) * 3).save(tmp_path / f"inst{g}" / f"{v}.png")
    loader = build_memory_loader(
        tmp_path, aug="v2", crop_size=8, scale=(0.5, 1.0), batch_size=8, positives="folder"
    )
    loader.augment = lambda crops: crops  # the raw crops: flat images of their source's value
    q, k = loader.two_views(torch.arange(8).repeat(8), torch.Generator().manual_seed(0))
    q, k = q[:, 0, 0, 0].long(), k[:, 0, 0, 0].long()
    assert torch.equal(q // 10, k // 10)  # the same instance
    assert (q != k).any()  # and, about half the time, its other view
    crops = build_memory_loader(tmp_path, aug="v2", crop_size=8, scale=(0.5, 1.0), batch_size=8)
    crops.augment = lambda c: c
    q, k = crops.two_views(torch.arange(8), torch.Generator().manual_seed(0))
    assert torch.equal(q[:, 0, 0, 0], k[:, 0, 0, 0])  # MoCo's: two crops of one image


def test_folder_positives_need_the_in_memory_loader():
    with pytest.raises(ConfigError, match="in_memory"):
        load_config(None, {"data": {"positives": "folder"}})
    with pytest.raises(ConfigError, match="crops or folder"):
        load_config(None, {"data": {"positives": "pairs", "in_memory": True}})
    assert load_config(None, {"data": {"positives": "folder", "in_memory": True}})


def test_the_config_reaches_the_loader(tiny_demo_data):
    from types import SimpleNamespace

    from pretrain.engine.build import build_loader

    ctx = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    for positives in ("crops", "folder"):
        cfg = tiny_cfg(data={"in_memory": True, "crop_size": 16, "positives": positives})
        loader = build_loader(cfg, tiny_demo_data["unlabeled_root"], ctx)
        assert (loader.partners is not None) == (positives == "folder")
        assert loader.hflip


def test_hflip_false_never_mirrors_a_view(tmp_path):
    from PIL import Image

    from pretrain.data.memory import build_memory_loader

    ramp = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (16, 1))  # left dark, right bright
    for i in range(8):
        Image.fromarray(np.stack([ramp] * 3, axis=-1)).save(tmp_path / f"ramp{i}.png")

    def mirrored(loader):
        loader.augment = lambda crops: crops
        q, k = loader.two_views(torch.zeros(64, dtype=torch.long), torch.Generator().manual_seed(0))
        views = torch.cat([q, k]).float()
        return (views[..., 0] > views[..., -1]).all(dim=(1, 2))  # brighter on the left

    kw = dict(aug="crop", crop_size=8, scale=(0.5, 1.0), batch_size=2)
    assert not mirrored(build_memory_loader(tmp_path, hflip=False, **kw)).any()
    flips = mirrored(build_memory_loader(tmp_path, **kw)).float().mean()
    assert 0.3 < flips < 0.7, flips  # MoCo's default: half the views mirrored
    with pytest.raises(ConfigError, match="in_memory"):
        load_config(None, {"data": {"hflip": False}})
    with pytest.raises(ConfigError, match="true or false"):
        load_config(None, {"data": {"hflip": "no", "in_memory": True}})
    cfg = tiny_cfg(data={"in_memory": True, "crop_size": 16, "hflip": False})
    from types import SimpleNamespace

    from pretrain.engine.build import build_loader

    ctx = SimpleNamespace(rank=0, world_size=1, device=torch.device("cpu"))
    assert not build_loader(cfg, tmp_path, ctx).hflip
