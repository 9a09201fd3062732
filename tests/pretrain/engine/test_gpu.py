"""On a CUDA device: the same loop, with mixed precision, device augmentation and device decoding.

Marked ``gpu``: collected everywhere, deselected (with a line saying so) where there is no CUDA
device, unless asked for with ``-m gpu``; then it fails, so that a GPU job that lost its GPU
cannot pass by running nothing.
"""

import pytest
import torch

from pretrain.engine.config import load_config
from pretrain.engine.train import train
from pretrain.io import safe_torch_load


@pytest.mark.gpu
def test_pretraining_on_cuda_with_amp_and_device_decoding(tiny_demo_data, tmp_path):
    if not torch.cuda.is_available():
        pytest.fail(
            "-m gpu was asked for, but torch sees no CUDA device (torch.cuda.is_available() is "
            "False): run it on a GPU machine, or without -m gpu"
        )
    cfg = load_config(
        None,
        {
            "model": {"arch": "resnet18", "dim": 16, "K": 64, "mlp": True, "T": 0.2},
            "data": {
                "aug": "v2",
                "crop_size": 32,
                "num_workers": 1,
                "samples_per_epoch": 64,
                "pipeline": "fast",
                "decode": "device",
            },
            "optim": {"lr": 0.03, "base_batch_size": 16, "epochs": 1},
            "batch_size": 16,
            "checkpoint": {"every_iters": 100, "keep_last": 1},
            "log": {"every_iters": 1, "tensorboard": False},
            "device": "cuda",
            "amp": "auto",
        },
    )
    torch.cuda.reset_peak_memory_stats()
    summary = train(cfg, tiny_demo_data["unlabeled_root"], tmp_path / "run")
    assert summary["global_step"] == 4 and torch.cuda.max_memory_allocated() > 0
    state = safe_torch_load(
        summary["checkpoint"]
    )  # loads on a CPU-only machine too (map_location cpu)
    weights = state["state_dict"]["module.encoder_q.conv1.weight"]
    assert weights.device.type == "cpu" and torch.isfinite(weights).all()
    assert state["state_dict"]["module.queue_ptr"].item() == (4 * 16) % 64
