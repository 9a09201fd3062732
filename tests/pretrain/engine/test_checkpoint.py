"""Checkpoint files: official layout, atomic rotation, newest valid picked, RNG round trip."""

import os
import random
import stat

import numpy as np
import pytest
import torch

from pretrain.engine import checkpoint as ckpt
from pretrain.io import CorruptCheckpointError, atomic_write_bytes, safe_torch_load
from pretrain.model.moco import MoCo


def _state(step, model=None):
    sd = ckpt.model_state_dict(model) if model is not None else {"module.queue": torch.zeros(2, 3)}
    return {
        "epoch": 0,
        "iter": step,
        "global_step": step,
        "arch": "resnet18",
        "state_dict": sd,
        "optimizer": {"state": {}, "param_groups": []},
        "rng": ckpt.get_rng_state(),
        "config": {"seed": 0},
    }


def test_official_layout_with_module_prefix_loads_weights_only(tmp_path):
    model = MoCo("resnet18", dim=8, K=16)
    path = ckpt.save_checkpoint(_state(5, model), tmp_path)
    state = safe_torch_load(path)  # weights_only=True
    keys = set(state["state_dict"])
    assert "module.encoder_q.conv1.weight" in keys and "module.encoder_k.fc.weight" in keys
    assert "module.queue" in keys and "module.queue_ptr" in keys
    assert state["arch"] == "resnet18" and state["epoch"] == 0 and state["format"] == ckpt.FORMAT
    other = MoCo("resnet18", dim=8, K=16)
    ckpt.load_model_state(other, state["state_dict"])
    assert torch.equal(other.queue, model.queue)


def test_wrong_model_is_a_clear_error(tmp_path):
    path = ckpt.save_checkpoint(_state(1, MoCo("resnet18", dim=8, K=16)), tmp_path)
    with pytest.raises(ValueError, match="different arch / dim / K"):
        ckpt.load_model_state(
            MoCo("resnet18", dim=8, K=16, mlp=True), safe_torch_load(path)["state_dict"]
        )
    # Same names, other sizes (another K): named, with the fix, not torch's size-mismatch dump.
    with pytest.raises(
        ValueError, match=r"(?s)queue \(8, 16\) in the checkpoint, \(8, 32\) in the model.*Fix"
    ):
        ckpt.load_model_state(MoCo("resnet18", dim=8, K=32), safe_torch_load(path)["state_dict"])


def test_keep_last_and_last_pointer(tmp_path):
    for step in (10, 20, 30, 40):
        ckpt.save_checkpoint(_state(step), tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [40, 30]
    assert (tmp_path / "last").read_text().strip() == "checkpoint_0000040.pth"
    assert ckpt.latest_checkpoint(tmp_path) == str(tmp_path / "checkpoint_0000040.pth")


def test_resume_auto_skips_truncated_and_corrupt_files(tmp_path):
    for step in (1, 2, 3):
        ckpt.save_checkpoint(_state(step), tmp_path, keep_last=5)
    newest = tmp_path / "checkpoint_0000003.pth"
    newest.write_bytes(newest.read_bytes()[:100])  # truncated
    (tmp_path / "checkpoint_0000002.pth").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint"):
        path, state = ckpt.resolve_resume("auto", tmp_path)
    assert path.endswith("checkpoint_0000001.pth") and state["global_step"] == 1


def test_resume_nothing_and_bad_explicit_path(tmp_path):
    assert ckpt.resolve_resume("auto", tmp_path) == (None, None)
    with pytest.raises(FileNotFoundError, match="--resume auto"):
        ckpt.resolve_resume(str(tmp_path / "nope.pth"), tmp_path)
    torch.save({"model": {}}, tmp_path / "weights.pth")
    with pytest.raises(ValueError, match="not a resumable MoCo"):
        ckpt.resolve_resume(str(tmp_path / "weights.pth"), tmp_path)


def test_rng_state_round_trip():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    state = ckpt.get_rng_state()
    a = (torch.rand(3), random.random(), np.random.rand())
    torch.rand(5), random.random(), np.random.rand()
    ckpt.set_rng_state(state)
    b = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage" * 10, b"PK\x03\x04" + b"\x00" * 40],
    ids=["empty", "garbage", "cut-zip"],
)
def test_a_file_that_is_no_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "model.pth"
    path.write_bytes(content)
    with pytest.raises(
        CorruptCheckpointError, match="(?s)not a readable checkpoint.*download or copy it again"
    ):
        safe_torch_load(path)


def test_a_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "model.pth"
    torch.save({"w": torch.randn(1000)}, path)
    path.write_bytes(path.read_bytes()[:2000])  # a download cut short
    with pytest.raises(CorruptCheckpointError, match="cut short"):
        safe_torch_load(path)


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "result.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "result.json").st_mode) == 0o644  # not mkstemp's 0600


def test_writes_cut_short_by_a_kill_are_cleaned_up_and_nothing_else(tmp_path):
    done = ckpt.save_checkpoint(_state(4), tmp_path)
    partial = [tmp_path / ".checkpoint_0000008.pth.k2x9.tmp", tmp_path / ".last.a1b2.tmp"]
    for p in partial:
        p.write_bytes(b"half a checkpoint")
    keep = [tmp_path / "notes.tmp", tmp_path / ".checkpoint_0000008.pth.swp"]
    for p in keep:
        p.write_bytes(b"the user's")
    assert sorted(ckpt.remove_partial_writes(tmp_path)) == sorted(map(str, partial))
    assert os.path.isfile(done) and all(p.exists() for p in keep)


def test_a_run_killed_inside_a_checkpoint_write_resumes_from_the_previous_one(
    tiny_demo_data, tmp_path
):
    """A real kill: tools/pretrain.py in a child whose checkpoint write is cut off by the kernel."""
    from pretrain.engine.config import load_config
    from pretrain.engine.train import train
    from tests.killed_write import run_killed_mid_write
    from tests.paths import TOOLS

    data, out = tiny_demo_data["unlabeled_root"], tmp_path / "run"
    cfg = load_config(
        None,
        {
            "model": {"arch": "resnet18", "dim": 16, "K": 32, "mlp": True, "T": 0.2},
            "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 32},
            "optim": {"lr": 0.03, "base_batch_size": 8, "epochs": 1},
            "batch_size": 8,
            "checkpoint": {"every_iters": 1, "keep_last": 3},
            "log": {"every_iters": 1, "tensorboard": False},
            "device": "cpu",
            "max_iters": 1,
        },
    )
    train(cfg, data, out)
    previous = out / "checkpoint_0000001.pth"
    before = previous.read_bytes()
    run_killed_mid_write(
        os.path.join(TOOLS, "pretrain.py"),
        [
            "--config",
            out / "config.yaml",
            "--data",
            data,
            "--out",
            out,
            "--resume",
            "auto",
            "--opts",
            "max_iters",
            "2",
        ],
        limit_bytes=len(before) // 2,
        cwd=tmp_path,
    )
    # It died writing step 2's checkpoint: half of it lies in a temporary file, none under its name.
    partial = [p for p in os.listdir(out) if p.startswith(".checkpoint_0000002.pth.")]
    assert len(partial) == 1 and os.path.getsize(out / partial[0]) == len(before) // 2
    assert not (out / "checkpoint_0000002.pth").exists()
    assert previous.read_bytes() == before and safe_torch_load(previous)["global_step"] == 1
    assert (out / "last").read_text().strip() == "checkpoint_0000001.pth"
    assert [p for _, p in ckpt.list_checkpoints(out)] == [str(previous)]
    resumed = train(load_config(None, dict(cfg, max_iters=2)), data, out, resume="auto")
    assert resumed["resumed_from"] == str(previous) and resumed["global_step"] == 2
    assert not (out / partial[0]).exists()  # cleaned at start
