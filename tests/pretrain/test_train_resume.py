"""Never lose a run: a run cut mid-epoch and resumed follows the uninterrupted trajectory exactly."""
import pytest
import torch

from pretrain.checkpoint import list_checkpoints
from pretrain.config import load_config
from pretrain.io import safe_torch_load
from pretrain.train import train


def tiny_cfg(pipeline="reference", decode="workers", **top):
    cfg = {
        "model": {"arch": "resnet18", "dim": 16, "K": 40, "mlp": True, "T": 0.2, "bn_splits": 2},
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 32, "pipeline": pipeline,
                 "decode": decode},
        "optim": {"lr": 0.05, "base_batch_size": 8, "epochs": 2, "schedule": "cosine"},
        "batch_size": 8, "checkpoint": {"every_iters": 3, "keep_last": 10},
        "log": {"every_iters": 1, "tensorboard": False}, "deterministic": True, "device": "cpu",
    }
    cfg.update(top)
    return load_config(None, cfg)


# "fast": uint8 crops in the loader, colour/blur/normalisation by DeviceAugment (its generator
# is checkpointed too); on CPU it is slower, but it must resume just as exactly. "device": the
# loader only reads bytes and draws crops, the training process decodes (nvJPEG on a GPU).
@pytest.mark.parametrize("pipeline,decode", [("reference", "workers"), ("fast", "workers"), ("fast", "device")])
def test_half_run_plus_resume_equals_straight_run(tiny_demo_data, tmp_path, pipeline, decode):
    data = tiny_demo_data["unlabeled_root"]
    # 4 iterations per epoch; the cut at step 3 is mid-epoch, the run then crosses an epoch boundary.
    straight = train(tiny_cfg(pipeline, decode, max_iters=6), data, tmp_path / "straight")
    first = train(tiny_cfg(pipeline, decode, max_iters=3), data, tmp_path / "resumed")
    assert first["global_step"] == 3
    second = train(tiny_cfg(pipeline, decode, max_iters=6), data, tmp_path / "resumed", resume="auto")
    assert second["resumed_from"].endswith("checkpoint_0000003.pth")
    assert straight["global_step"] == second["global_step"] == 6

    a = safe_torch_load(tmp_path / "straight" / "checkpoint_0000006.pth")
    b = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000006.pth")
    assert (a["epoch"], a["iter"]) == (b["epoch"], b["iter"]) == (1, 2)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][name]), name
    assert a["state_dict"]["module.queue_ptr"].item() == (6 * 8) % 40
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert torch.equal(sa["momentum_buffer"], sb["momentum_buffer"])
    # The weights did move: the comparison is not between two untouched models.
    first_ckpt = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000003.pth")
    assert not torch.equal(first_ckpt["state_dict"]["module.encoder_q.conv1.weight"],
                           b["state_dict"]["module.encoder_q.conv1.weight"])
    steps = [s for s, _ in list_checkpoints(tmp_path / "resumed")]
    assert steps == [6, 4, 3]  # every 3 iterations and each epoch (4)
