"""Training runs that must learn, not only run: MoCo's pretext task and the supervised baseline.

MoCo: after a few hundred steps on demo digits its queries must pick their own key out of the
queue far more often than the same run at lr 0 (the network at init), with the similarities of
positives and negatives apart. The supervised baseline must be far above chance on held-out digits.
Each is a short real run of the code the demo uses (in-memory batched augmentation, one thread).
"""
import json

import pytest
import torch

from pretrain.config import load_config
from pretrain.supervised import train_supervised
from pretrain.train import train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """600 digit scans: 480 train / 120 val renders (a few seconds to generate)."""
    from detection.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("learning_digits"), seed=0, limit=600,
                          n_det_trainval=2, n_det_test=2, verbose=False)


def moco_cfg(lr, **model):
    return load_config(None, {
        "model": {"arch": "resnet18", "dim": 64, "K": 256, "m": 0.99, "T": 0.2, "mlp": True,
                  "bn_splits": 4, **model},
        "data": {"aug": "v2", "crop_size": 32, "in_memory": True, "num_workers": 0},
        "optim": {"lr": lr, "base_batch_size": 256, "epochs": 12, "schedule": "cosine",
                  "warmup_epochs": 1, "weight_decay": 5.0e-4},
        "batch_size": 32, "checkpoint": {"every_iters": 100000, "keep_last": 1},
        "log": {"every_iters": 15, "tensorboard": False}, "device": "cpu", "seed": 0,
    })


def late_stats(out_dir, last=3):
    """Mean positive top-1 (%) and q.k+ - q.k- over the run's last ``last`` log intervals."""
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "pos_top1" in r][-last:]
    top1 = sum(r["pos_top1"] for r in rows) / len(rows)
    gap = sum(r["sim_pos"] - r["sim_neg"] for r in rows) / len(rows)
    return top1, gap


def test_moco_learns_its_pretext_task(digits, tmp_path, one_thread):
    # 480 images / 32 = 15 steps per epoch, 12 epochs = 180 steps; lr 0.24 per 256 = 0.03 here.
    data = digits["unlabeled_root"]
    train(moco_cfg(0.24), data, tmp_path / "moco")
    train(moco_cfg(0.0), data, tmp_path / "frozen")
    top1, gap = late_stats(tmp_path / "moco")
    top1_0, gap_0 = late_stats(tmp_path / "frozen")
    print(f"positive top-1 {top1:.1f} % vs {top1_0:.1f} % at lr 0; q.k+ - q.k- {gap:.3f} vs {gap_0:.3f}")
    assert top1 > top1_0 + 10 and top1 > 2 * top1_0, (top1, top1_0)
    assert gap > gap_0 + 0.1, (gap, gap_0)


def test_supervised_baseline_learns_far_above_chance(digits, tmp_path, one_thread):
    torch.manual_seed(0)
    metrics = train_supervised(digits["cls_root"], tmp_path / "sup", arch="resnet18", epochs=15,
                               image_size=32, batch_size=32, lr=0.2, weight_decay=5e-4, num_workers=0,
                               device="cpu", crop_scale=(0.5, 1.0), warmup_epochs=1, printer=lambda *a, **k: None)
    print(f"supervised val top-1 {metrics['top1']:.1f} % (chance 10 %)")
    assert metrics["top1"] > 50, metrics
