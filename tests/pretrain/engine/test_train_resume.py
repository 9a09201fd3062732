"""Never lose a run: a run cut mid-epoch and resumed follows the uninterrupted
trajectory exactly.
"""

import pytest
import torch

from pretrain.engine.checkpoint import list_checkpoints
from pretrain.engine.config import load_config
from pretrain.engine.train import train
from pretrain.io import safe_torch_load


def tiny_cfg(pipeline="reference", decode="workers", **top):
    cfg = {
        "model": {"arch": "resnet18", "dim": 16, "K": 40, "mlp": True, "T": 0.2, "bn_splits": 2},
        "data": {
            "aug": "v2",
            "crop_size": 32,
            "num_workers": 0,
            "samples_per_epoch": 32,
            "pipeline": pipeline,
            "decode": decode,
        },
        "optim": {"lr": 0.05, "base_batch_size": 8, "epochs": 2, "schedule": "cosine"},
        "batch_size": 8,
        "checkpoint": {"every_iters": 3, "keep_last": 10},
        "log": {"every_iters": 1, "tensorboard": False},
        "deterministic": True,
        "device": "cpu",
    }
    cfg.update(top)
    return load_config(None, cfg)


# "fast": uint8 crops in the loader, colour/blur/normalisation by DeviceAugment (its generator
# is checkpointed too); on CPU it is slower, but it must resume just as exactly. "device": the
# loader only reads bytes and draws crops, the training process decodes (nvJPEG on a GPU).
@pytest.mark.parametrize(
    "pipeline,decode", [("reference", "workers"), ("fast", "workers"), ("fast", "device")]
)
def test_half_run_plus_resume_equals_straight_run(tiny_demo_data, tmp_path, pipeline, decode):
    data = tiny_demo_data["unlabeled_root"]
    # 4 iterations per epoch; the cut at step 3 is mid-epoch, the run then crosses an epoch
    # boundary.
    straight = train(tiny_cfg(pipeline, decode, max_iters=6), data, tmp_path / "straight")
    first = train(tiny_cfg(pipeline, decode, max_iters=3), data, tmp_path / "resumed")
    assert first["global_step"] == 3
    second = train(
        tiny_cfg(pipeline, decode, max_iters=6), data, tmp_path / "resumed", resume="auto"
    )
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
    assert not torch.equal(
        first_ckpt["state_dict"]["module.encoder_q.conv1.weight"],
        b["state_dict"]["module.encoder_q.conv1.weight"],
    )
    steps = [s for s, _ in list_checkpoints(tmp_path / "resumed")]
    assert steps == [6, 4, 3]  # every 3 iterations and each epoch (4)


def test_resuming_an_older_checkpoint_sets_the_abandoned_branch_aside(tiny_demo_data, tmp_path):
    data, out = tiny_demo_data["unlabeled_root"], tmp_path / "run"
    train(tiny_cfg(max_iters=6, checkpoint={"every_iters": 1, "keep_last": 2}), data, out)
    assert [s for s, _ in list_checkpoints(out)] == [6, 5]
    old = safe_torch_load(out / "checkpoint_0000005.pth")
    (out / ".checkpoint_0000007.pth.x1y2.tmp").write_bytes(b"a write cut short by a kill")
    # Resume from step 5 explicitly, with another lr: a new branch from step 5.
    branch = tiny_cfg(
        max_iters=7, checkpoint={"every_iters": 1, "keep_last": 1}, optim={"lr": 0.01}
    )
    summary = train(branch, data, out, resume=str(out / "checkpoint_0000005.pth"))
    # The new branch's checkpoints are kept (keep_last 1: the newest only) and resumable; the
    # abandoned step 6 is neither pruned in their favour nor picked by --resume auto: it is kept
    # aside.
    assert [s for s, _ in list_checkpoints(out)] == [7]
    assert summary["checkpoint"].endswith("checkpoint_0000007.pth")
    assert (out / "superseded" / "checkpoint_0000006.pth").is_file()
    assert not (out / ".checkpoint_0000007.pth.x1y2.tmp").exists()  # cleaned at start
    again = train(
        tiny_cfg(max_iters=8, checkpoint={"every_iters": 1, "keep_last": 1}),
        data,
        out,
        resume="auto",
    )
    assert again["resumed_from"].endswith("checkpoint_0000007.pth")
    assert old["global_step"] == 5


def _skipped_column(console):
    """The ``skipped N`` field of each progress line."""
    return [
        int(line.split("  skipped ")[1].split()[0])
        for line in console.splitlines()
        if line.startswith("step ") and "  skipped " in line
    ]


def test_checkpoints_carry_the_whole_runs_skip_count(tiny_demo_data, tmp_path, capsys):
    import json
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_demo_data["unlabeled_root"], data)
    # Every 4th image corrupt (40 of the 160): the cut run's 3 steps (24 samples) and the 3 after it
    # each meet some, so the total is only right if the checkpoint's count is carried over.
    for victim in sorted(data.rglob("*.jpg"))[::4]:
        victim.write_bytes(b"not a jpeg")
    cfg = {"data": {"samples_per_epoch": None}}  # one epoch: the whole folder (20 steps)
    capsys.readouterr()
    straight = train(tiny_cfg(max_iters=6, **cfg), data, tmp_path / "straight")
    # The running count is in every progress line and metrics.jsonl record, ending at the total.
    shown = _skipped_column(capsys.readouterr().out)
    records = [
        json.loads(line)
        for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()
    ]
    logged = [r["skipped"] for r in records if r["kind"] == "train"]
    assert shown == logged and len(shown) == 6 and shown == sorted(shown)
    assert shown[0] >= 1 and shown[-1] == straight["skipped_images"]
    train(tiny_cfg(max_iters=3, **cfg), data, tmp_path / "resumed")
    at_cut = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000003.pth")["skipped_images"]
    assert 1 <= at_cut < straight["skipped_images"]
    capsys.readouterr()
    resumed = train(tiny_cfg(max_iters=6, **cfg), data, tmp_path / "resumed", resume="auto")
    assert _skipped_column(capsys.readouterr().out) == shown[3:]  # the count goes on from the cut's
    assert resumed["resumed_from"].endswith("checkpoint_0000003.pth")
    assert resumed["skipped_images"] == straight["skipped_images"]
    last = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000006.pth")
    assert last["skipped_images"] == straight["skipped_images"]


def test_mid_epoch_checkpoint_refuses_another_batch_size(tiny_demo_data, tmp_path, capsys):
    """...another process count or other data too; from an epoch end anything goes, and
    is listed.
    """
    from pretrain.engine.config import ConfigError
    from pretrain.engine.resume import check_resumable

    data, out = tiny_demo_data["unlabeled_root"], tmp_path / "run"
    train(tiny_cfg(max_iters=3), data, out)  # step 3 of 4 in epoch 0
    with pytest.raises(ConfigError, match="iteration 3 of epoch 0 with batch_size 8"):
        train(tiny_cfg(batch_size=4, max_iters=6), data, out, resume="auto")
    # Other data (here: 16 samples an epoch instead of 32, so 2 iterations instead of 4).
    with pytest.raises(
        ConfigError,
        match=r"(?s)4 iterations per epoch; this run has batch_size 8 x 1 "
        r"processes, 2 iterations per epoch.*Fix",
    ):
        train(tiny_cfg(max_iters=6, data={"samples_per_epoch": 16}), data, out, resume="auto")
    # Another process count: what train() checks when it runs in 2 processes.
    path = out / "checkpoint_0000003.pth"
    with pytest.raises(
        ConfigError,
        match=r"batch_size 8 x 1 processes, 4 iterations per epoch; this run "
        r"has batch_size 8 x 2 processes",
    ):
        check_resumable(safe_torch_load(path), tiny_cfg(), 2, 4, path)
    check_resumable(safe_torch_load(path), tiny_cfg(), 1, 4, path)  # the same layout: fine
    train(tiny_cfg(max_iters=4), data, out, resume="auto")  # to the epoch's end (step 4)
    capsys.readouterr()
    # At an epoch boundary the layout may change: the next epoch starts a fresh order.
    summary = train(tiny_cfg(batch_size=4, max_iters=6), data, out, resume="auto")
    assert (
        summary["resumed_from"].endswith("checkpoint_0000004.pth") and summary["global_step"] == 6
    )
    notes = [line for line in capsys.readouterr().out.splitlines() if "settings changed" in line]
    assert len(notes) == 1 and "batch_size: 8 -> 4" in notes[0], notes


def test_diverged_weights_are_never_checkpointed(tiny_demo_data, tmp_path):
    data, out = tiny_demo_data["unlabeled_root"], tmp_path / "run"
    ckpts = {"every_iters": 1, "keep_last": 10}
    train(tiny_cfg(max_iters=2, checkpoint=ckpts), data, out)  # a healthy start
    # Then the lr explodes; the loss is read only every 6 steps, checkpoints are due every step.
    cfg = tiny_cfg(
        max_iters=8,
        optim={"lr": 1.0e30},
        log={"every_iters": 6, "tensorboard": False},
        checkpoint=ckpts,
    )
    with pytest.raises(FloatingPointError, match="no checkpoint written.*checkpoint_0000002.pth"):
        train(cfg, data, out, resume="auto")
    assert [s for s, _ in list_checkpoints(out)] == [2, 1]  # --resume auto finds a sound model
    for _, path in list_checkpoints(out):
        state = safe_torch_load(path)["state_dict"]
        assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()), path
