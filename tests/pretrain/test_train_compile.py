"""``compile``: the loop runs torch.compile'd encoders and computes what the eager loop computes.

Uses the ``aot_eager`` backend (Dynamo graph capture + AOTAutograd, no code generation), which
exercises our plumbing in seconds; inductor (``compile: true``) needs minutes to compile a
ResNet on a CPU and is measured by ``tools/benchmark_pretrain.py --compile`` instead.
"""
import pytest
import torch
import torch._dynamo.utils

from pretrain.config import ConfigError, load_config
from pretrain.io import safe_torch_load
from pretrain.train import train


def tiny_cfg(**top):
    cfg = {
        "model": {"arch": "resnet18", "dim": 16, "K": 40, "mlp": True, "T": 0.2, "bn_splits": 2},
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 24},
        "optim": {"lr": 0.05, "base_batch_size": 8, "epochs": 1},
        "batch_size": 8, "checkpoint": {"every_iters": 100, "keep_last": 1},
        "log": {"every_iters": 1, "tensorboard": False}, "deterministic": True, "device": "cpu",
    }
    cfg.update(top)
    return load_config(None, cfg)


def test_compiled_run_matches_eager_run(tiny_demo_data, tmp_path):
    data = tiny_demo_data["unlabeled_root"]
    eager = train(tiny_cfg(), data, tmp_path / "eager")
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = train(tiny_cfg(compile="aot_eager"), data, tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] >= 2, dict(counters["stats"])  # both encoders were captured
    assert eager["global_step"] == compiled["global_step"] == 3
    a = safe_torch_load(eager["checkpoint"])["state_dict"]
    b = safe_torch_load(compiled["checkpoint"])["state_dict"]
    assert a.keys() == b.keys()  # compiling in place keeps the official names (no "_orig_mod.")
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)


def test_bad_compile_setting_is_a_clear_error(tiny_demo_data, tmp_path):
    with pytest.raises(ConfigError, match="compile must be"):
        tiny_cfg(compile=3)
    with pytest.raises(ValueError, match="unknown torch.compile backend"):
        train(tiny_cfg(compile="no_such_backend"), tiny_demo_data["unlabeled_root"], tmp_path / "out")
