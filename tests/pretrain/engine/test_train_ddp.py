"""Two gloo processes through the real loop: gradients in sync, checkpoints from rank 0 only."""

import os

import torch

from pretrain.data.image_dataset import PretrainImageDataset
from pretrain.data.sampler import epoch_order
from pretrain.engine.checkpoint import list_checkpoints
from pretrain.engine.config import load_config
from pretrain.io import safe_torch_load
from pretrain.model.moco import MoCo
from tests.pretrain import gloo_launch

SAMPLES_PER_EPOCH = 32


def _worker(rank, world, data, out, result_dir):
    import pretrain.engine.checkpoint as ckpt
    import pretrain.engine.train as train_module

    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    built, saves, modes, seen = [], [], [], []
    real_build, real_save = train_module.build_model, ckpt.save_checkpoint
    real_getitem = PretrainImageDataset.__getitem__

    def getitem_and_record(self, key):  # num_workers 0: every sample is read in this process
        seen.append(key)
        return real_getitem(self, key)

    def build_and_keep(cfg):  # keep a handle on this rank's model to compare ranks afterwards
        built.append(real_build(cfg))
        modes.append(built[-1].shuffle_mode())  # the process group is up when the model is built
        return built[-1]

    def save_and_count(*args, **kwargs):
        saves.append(args[0]["global_step"])
        return real_save(*args, **kwargs)

    train_module.build_model = build_and_keep
    ckpt.save_checkpoint = save_and_count
    PretrainImageDataset.__getitem__ = getitem_and_record
    cfg = load_config(
        None,
        {
            "model": {"arch": "resnet18", "dim": 16, "K": 48, "mlp": True, "T": 0.2},
            "data": {
                "aug": "v2",
                "crop_size": 32,
                "num_workers": 0,
                "samples_per_epoch": SAMPLES_PER_EPOCH,
            },
            "optim": {"lr": 0.1, "base_batch_size": 8, "epochs": 1},
            "batch_size": 4,
            "checkpoint": {"every_iters": 2, "keep_last": 5},
            "log": {"every_iters": 1, "tensorboard": False},
            "device": "cpu",
            "max_iters": 4,  # 1 epoch
        },
    )
    summary = train_module.train(cfg, data, out)
    model = built[0]
    torch.save(
        {
            "state": {k: v.clone() for k, v in model.state_dict().items()},
            "saves": saves,
            "summary_step": summary["global_step"],
            "mode": modes[0],
            "seen": seen,
        },
        os.path.join(result_dir, f"rank{rank}.pt"),
    )


def test_two_process_training_stays_in_sync(tiny_demo_data, tmp_path):
    from pretrain.data.folder import scan_image_folder

    out, data = tmp_path / "run", tiny_demo_data["unlabeled_root"]
    gloo_launch.spawn(_worker, (2, data, str(out), str(tmp_path)), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2))
    assert r0["mode"] == r1["mode"] == "ddp" and r0["summary_step"] == r1["summary_step"] == 4
    # Each rank read its own half of the epoch: disjoint samples that together are the epoch.
    epoch = epoch_order(
        len(scan_image_folder(data)), seed=0, epoch=0, samples_per_epoch=SAMPLES_PER_EPOCH
    )
    seen0, seen1 = ([tuple(key) for key in r["seen"]] for r in (r0, r1))
    assert len(seen0) == len(seen1) == 4 * 4  # 4 steps of 4 per rank
    assert not set(seen0) & set(seen1)
    assert (
        sorted(seen0 + seen1) == sorted((0, i) for i in epoch)
        and len(set(epoch)) == SAMPLES_PER_EPOCH
    )
    # Same weights on both ranks after steps on different data: DDP averaged the gradients;
    # the queue holds both ranks' keys (2 x 4 per step). (BN running statistics are per rank,
    # as in the official code; DDP broadcasts rank 0's at each forward.)
    torch.manual_seed(0)  # the model must have moved from its seed-0 start
    start = MoCo("resnet18", dim=16, K=48, mlp=True, T=0.2)
    synced = [n for n, _ in start.named_parameters()] + ["queue", "queue_ptr"]
    assert len(synced) > 100
    for name in synced:
        assert torch.equal(r0["state"][name], r1["state"][name]), name
    assert r0["state"]["queue_ptr"].item() == 4 * 8
    assert not torch.equal(start.encoder_q.conv1.weight, r0["state"]["encoder_q.conv1.weight"])
    # Only rank 0 wrote checkpoints; they hold the synced weights with the official prefix.
    assert r0["saves"] == [2, 4] and r1["saves"] == []
    assert [s for s, _ in list_checkpoints(out)] == [4, 2]
    saved = safe_torch_load(out / "checkpoint_0000004.pth")
    assert saved["world_size"] == 2
    assert torch.equal(
        saved["state_dict"]["module.encoder_q.conv1.weight"], r0["state"]["encoder_q.conv1.weight"]
    )
    assert torch.equal(saved["state_dict"]["module.queue"], r1["state"]["queue"])


def _run(rank, world, data, out, max_iters, resume):
    import pretrain.engine.train as train_module

    torch.set_num_threads(1)
    if resume:  # as srun starts its tasks (the first half: as torchrun does)
        os.environ.update(
            SLURM_PROCID=str(rank), SLURM_STEP_NUM_TASKS=str(world), SLURM_LOCALID=str(rank)
        )
    else:
        os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    cfg = load_config(
        None,
        {
            "model": {"arch": "resnet18", "dim": 16, "K": 48, "mlp": True, "T": 0.2},
            # fast pipeline: colour and blur are drawn by each rank's own generator
            "data": {
                "aug": "v2",
                "crop_size": 32,
                "num_workers": 0,
                "samples_per_epoch": 64,
                "pipeline": "fast",
            },
            "optim": {"lr": 0.1, "base_batch_size": 8, "epochs": 1},
            "batch_size": 4,
            "checkpoint": {"every_iters": 2, "keep_last": 5},
            "deterministic": True,
            "log": {"every_iters": 1, "tensorboard": False},
            "device": "cpu",
            "max_iters": max_iters,
        },
    )
    train_module.train(cfg, data, out, resume=resume)


def test_two_process_resume_continues_each_ranks_own_streams(tiny_demo_data, tmp_path):
    data = tiny_demo_data["unlabeled_root"]

    def launch(out, max_iters, resume=None):
        gloo_launch.spawn(_run, (2, data, str(out), max_iters, resume), nprocs=2)

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
