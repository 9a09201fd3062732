"""Two gloo processes through the real loop: gradients in sync, checkpoints from rank 0 only."""
import os
import socket

import torch
import torch.multiprocessing as mp

from pretrain.engine.checkpoint import list_checkpoints
from pretrain.engine.config import load_config
from pretrain.io import safe_torch_load
from pretrain.model.moco import MoCo


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, data, out, result_dir):
    import pretrain.engine.checkpoint as ckpt
    import pretrain.engine.train as train_module

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    built, saves, modes = [], [], []
    real_build, real_save = train_module.build_model, ckpt.save_checkpoint

    def build_and_keep(cfg):  # keep a handle on this rank's model to compare ranks afterwards
        built.append(real_build(cfg))
        modes.append(built[-1].shuffle_mode())  # the process group is up when the model is built
        return built[-1]

    def save_and_count(*args, **kwargs):
        saves.append(args[0]["global_step"])
        return real_save(*args, **kwargs)

    train_module.build_model = build_and_keep
    ckpt.save_checkpoint = save_and_count
    cfg = load_config(None, {
        "model": {"arch": "resnet18", "dim": 16, "K": 48, "mlp": True, "T": 0.2},
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 32},
        "optim": {"lr": 0.1, "base_batch_size": 8, "epochs": 1},
        "batch_size": 4, "checkpoint": {"every_iters": 2, "keep_last": 5},
        "log": {"every_iters": 1, "tensorboard": False}, "device": "cpu", "max_iters": 3,
    })
    summary = train_module.train(cfg, data, out)
    model = built[0]
    torch.save({"state": {k: v.clone() for k, v in model.state_dict().items()}, "saves": saves,
                "summary_step": summary["global_step"], "mode": modes[0]},
               os.path.join(result_dir, f"rank{rank}.pt"))


def test_two_process_training_stays_in_sync(tiny_demo_data, tmp_path):
    out = tmp_path / "run"
    mp.spawn(_worker, args=(2, _free_port(), tiny_demo_data["unlabeled_root"], str(out), str(tmp_path)),
             nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert r0["mode"] == r1["mode"] == "ddp" and r0["summary_step"] == r1["summary_step"] == 3
    # Same weights on both ranks after steps on different data: DDP averaged the gradients;
    # the queue holds both ranks' keys (2 x 4 per step). (BN running statistics are per rank,
    # as in the official code; DDP broadcasts rank 0's at each forward.)
    torch.manual_seed(0)  # the model must have moved from its seed-0 start
    start = MoCo("resnet18", dim=16, K=48, mlp=True, T=0.2)
    synced = [n for n, _ in start.named_parameters()] + ["queue", "queue_ptr"]
    assert len(synced) > 100
    for name in synced:
        assert torch.equal(r0["state"][name], r1["state"][name]), name
    assert r0["state"]["queue_ptr"].item() == 3 * 8
    assert not torch.equal(start.encoder_q.conv1.weight, r0["state"]["encoder_q.conv1.weight"])
    # Only rank 0 wrote checkpoints; they hold the synced weights with the official prefix.
    assert r0["saves"] == [2, 3] and r1["saves"] == []
    assert [s for s, _ in list_checkpoints(out)] == [3, 2]
    saved = safe_torch_load(out / "checkpoint_0000003.pth")
    assert saved["world_size"] == 2
    assert torch.equal(saved["state_dict"]["module.encoder_q.conv1.weight"], r0["state"]["encoder_q.conv1.weight"])
    assert torch.equal(saved["state_dict"]["module.queue"], r1["state"]["queue"])


def _run(rank, world, port, data, out, max_iters, resume):
    import pretrain.engine.train as train_module

    torch.set_num_threads(1)
    if resume:  # as srun starts its tasks (the first half: as torchrun does)
        os.environ.update(SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS=str(world), SLURM_LOCALID=str(rank))
    else:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cfg = load_config(None, {
        "model": {"arch": "resnet18", "dim": 16, "K": 48, "mlp": True, "T": 0.2},
        # fast pipeline: colour and blur are drawn by each rank's own generator
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 64, "pipeline": "fast"},
        "optim": {"lr": 0.1, "base_batch_size": 8, "epochs": 1},
        "batch_size": 4, "checkpoint": {"every_iters": 2, "keep_last": 5}, "deterministic": True,
        "log": {"every_iters": 1, "tensorboard": False}, "device": "cpu", "max_iters": max_iters,
    })
    train_module.train(cfg, data, out, resume=resume)


def test_two_process_resume_continues_each_ranks_own_streams(tiny_demo_data, tmp_path):
    data = tiny_demo_data["unlabeled_root"]

    def launch(out, max_iters, resume=None):
        mp.spawn(_run, args=(2, _free_port(), data, str(out), max_iters, resume), nprocs=2, join=True)

    launch(tmp_path / "straight", 4)
    launch(tmp_path / "resumed", 2)
    half = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000002.pth")
    gens = [r["generators"]["device_augment"] for r in half["ranks"]]
    assert len(gens) == 2 and not torch.equal(gens[0], gens[1])  # each rank's stream is saved
    launch(tmp_path / "resumed", 4, "auto")
    a = safe_torch_load(tmp_path / "straight" / "checkpoint_0000004.pth")["state_dict"]
    b = safe_torch_load(tmp_path / "resumed" / "checkpoint_0000004.pth")["state_dict"]
    for name, value in a.items():
        assert torch.equal(value, b[name]), name
