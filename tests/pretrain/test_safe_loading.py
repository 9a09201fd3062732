"""Checkpoints from outside run no code when they load: tools/lincls.py, tools/knn.py, --resume
PATH.

The file is a real torch.save pickle whose unpickling would call os.system (touch a marker file),
as a malicious checkpoint would; each entry point must refuse it and the marker must not appear.
"""

import importlib.util
import os

import pytest
import torch

from pretrain.io import UnsafeCheckpointError


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious(tmp_path):
    """``(path, marker)``: a checkpoint in our layout with a payload; loading it unsafely touches
    marker.
    """
    import torchvision

    marker = tmp_path / "pwned"
    state = {
        f"module.encoder_q.{k}": v for k, v in torchvision.models.resnet18().state_dict().items()
    }
    path = tmp_path / "checkpoint_0000004.pth"
    torch.save(
        {
            "epoch": 0,
            "iter": 4,
            "global_step": 4,
            "arch": "resnet18",
            "state_dict": state,
            "args": _RunsCode(marker),
        },
        path,
    )
    assert not marker.exists()
    # The payload is live: an unsafe load runs it (so the tests below would see it run).
    torch.load(path, weights_only=False)
    assert marker.exists()
    marker.unlink()
    return path, marker


def _tool(name):
    return importlib.import_module(f"pretrain.cli.{name}")


def test_lincls_refuses_a_checkpoint_that_would_run_code(malicious, tiny_demo_data, tmp_path):
    path, marker = malicious
    with pytest.raises(UnsafeCheckpointError, match="execute code"):
        _tool("lincls").main(
            [
                "--checkpoint",
                str(path),
                "--data",
                tiny_demo_data["cls_root"],
                "--out",
                str(tmp_path / "out"),
                "--epochs",
                "1",
                "--image-size",
                "16",
                "--workers",
                "0",
            ]
        )
    assert not marker.exists()


def test_knn_refuses_a_checkpoint_that_would_run_code(malicious, tiny_demo_data):
    path, marker = malicious
    with pytest.raises(UnsafeCheckpointError, match="execute code"):
        _tool("knn").main(
            [
                "--checkpoint",
                str(path),
                "--train",
                tiny_demo_data["cls_train"],
                "--val",
                tiny_demo_data["cls_val"],
                "--image-size",
                "16",
                "--workers",
                "0",
            ]
        )
    assert not marker.exists()


def test_resume_path_refuses_a_checkpoint_that_would_run_code(malicious, tiny_demo_data, tmp_path):
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train

    path, marker = malicious
    cfg = load_config(
        None,
        {
            "model": {"arch": "resnet18", "dim": 16, "K": 32},
            "batch_size": 8,
            "data": {"crop_size": 32, "num_workers": 0, "samples_per_epoch": 16},
            "log": {"tensorboard": False},
            "device": "cpu",
        },
    )
    with pytest.raises(UnsafeCheckpointError, match="execute code"):
        train(cfg, tiny_demo_data["unlabeled_root"], tmp_path / "run", resume=str(path))
    assert not marker.exists()
