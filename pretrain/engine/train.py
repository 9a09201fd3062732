"""The MoCo pretraining loop: one function, :func:`train`, for one process or many.

Order of work: read the data (clear errors before anything expensive), build the
model, resume if asked, then epochs of SGD steps with atomic checkpoints every
``checkpoint.every_iters`` iterations and every epoch. The step never waits for the
device except at log intervals.
"""
import math
import os
import shutil
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from pretrain import distributed as du
from pretrain import schedule
from pretrain.data.fast_augment import decode_two_crops_on_device
from pretrain.engine import checkpoint as ckpt
from pretrain.engine.config import ConfigError, check_for_world, dump, resume_differences, scaled_lr
from pretrain.engine.progress import ProgressLogger, plot_curves
from pretrain.io import atomic_write_bytes
from pretrain.model.backbone import pooled_backbone
from pretrain.model.moco import MoCo, contrast_stats, info_nce_loss
from pretrain.model.queue_fill import fill_queue_with_keys


def lr_at(cfg: dict, epoch_float: float, base_lr: float) -> float:
    """Learning rate at a (fractional) epoch: optional linear warm-up, then step or cosine."""
    o = cfg["optim"]
    return schedule.lr_at(base_lr, epoch_float, epochs=o["epochs"], schedule=o["schedule"],
                          warmup_epochs=o["warmup_epochs"], milestones=o["milestones"], gamma=o["gamma"])


def resolve_precision(cfg: dict, device: torch.device):
    """-> (autocast dtype or None, channels_last). Both are CUDA-only."""
    amp, cl = cfg["amp"], cfg["channels_last"]
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            print(f"amp={amp} ignored: mixed precision is used on CUDA only (running fp32 on {device})")
        return None, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return dtype, (cl == "auto" or cl is True)


def fast_pipeline(cfg: dict, device: torch.device) -> bool:
    """Whether augmentation is split between uint8 crops in the workers and the device."""
    choice = cfg["data"]["pipeline"]
    if cfg["data"]["in_memory"]:  # it augments whole batches itself (pretrain/data/memory.py)
        return False
    if choice == "auto":
        return device.type == "cuda" or cfg["data"]["decode"] == "device"
    return choice == "fast"


def build_loader(cfg: dict, data_path, ctx):
    from pretrain.data import build_pretrain_loader
    from pretrain.data.augment import build_pretrain_transform

    d = cfg["data"]
    scale = tuple(d["crop_scale"])
    if d["in_memory"]:
        from pretrain.data.memory import build_memory_loader

        return build_memory_loader(data_path, aug=d["aug"], crop_size=d["crop_size"], scale=scale,
                                   batch_size=cfg["batch_size"], rank=ctx.rank, world_size=ctx.world_size,
                                   seed=cfg["seed"], device=ctx.device, size=d["memory_size"])
    if fast_pipeline(cfg, ctx.device):
        from pretrain.data.fast_augment import FastTwoCropTransform

        decode = "device" if d["decode"] == "device" else "cpu"
        transform = FastTwoCropTransform(d["aug"], d["crop_size"], scale=scale, decode=decode)
    else:
        transform = build_pretrain_transform(d["aug"], d["crop_size"], scale=scale)
    return build_pretrain_loader(
        data_path, aug=d["aug"], crop_size=d["crop_size"], batch_size=cfg["batch_size"],
        num_workers=d["num_workers"], rank=ctx.rank, world_size=ctx.world_size, seed=cfg["seed"],
        kind={"list": "filelist"}.get(d["kind"], d["kind"]), samples_per_epoch=d["samples_per_epoch"],
        drop_last=True, transform=transform,
    )


def build_device_augment(cfg: dict, ctx, channels_last: bool):
    """The device half of the fast pipeline, or None; its generator goes into checkpoints."""
    if not fast_pipeline(cfg, ctx.device):
        return None
    from pretrain.data.device_augment import DeviceAugment

    d = cfg["data"]
    return DeviceAugment(d["aug"], d["crop_size"], seed=cfg["seed"] + 104729 * (ctx.rank + 1),
                         channels_last=channels_last).to(ctx.device)


def build_model(cfg: dict) -> MoCo:
    m = cfg["model"]
    return MoCo(arch=m["arch"], dim=m["dim"], K=m["K"], m=m["m"], T=m["T"], mlp=m["mlp"],
                bn_splits=m["bn_splits"], shuffle=m["shuffle"])


def compile_encoders(cfg: dict, model: MoCo) -> None:
    """``torch.compile`` both encoders in place (parameter names, hence checkpoints, unchanged)."""
    choice = cfg["compile"]
    if choice is False:
        return
    backend = "inductor" if choice is True else choice
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(f"compile={choice!r}: unknown torch.compile backend; known: {sorted(known)}")
    model.encoder_q.compile(backend=backend)
    model.encoder_k.compile(backend=backend)


def build_optimizer(cfg: dict, model: MoCo, device: torch.device) -> torch.optim.Optimizer:
    """SGD on the query encoder only (the key encoder follows by momentum). Fused on CUDA."""
    o = cfg["optim"]
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(model.encoder_q.parameters(), lr=o["lr"], momentum=o["momentum"],
                           weight_decay=o["weight_decay"], **impl)


def _prepare_out_dir(out_dir, resume, force, is_main):
    """Refuse to start over an existing run unless asked to resume it or --force."""
    existing = ckpt.list_checkpoints(out_dir)
    if existing and resume is None and not force:
        raise FileExistsError(
            f"{out_dir!r} already holds a run ({len(existing)} checkpoints, newest {os.path.basename(existing[0][1])}). "
            f"Continue it with --resume auto, choose another --out, or pass --force to discard it."
        )
    if force and resume is None and is_main:
        for _, path in existing:
            os.remove(path)
        for name in ("last", "metrics.jsonl", "loss_curve.png", "similarity_curve.png", "knn_curve.png"):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
        shutil.rmtree(os.path.join(out_dir, "tb"), ignore_errors=True)
    if is_main:
        for path in ckpt.remove_partial_writes(out_dir):
            print(f"removed {path}: a checkpoint write cut short by a kill")
    du.barrier()


def _knn(cfg, model, device, precise_bn=False):
    from pretrain.eval.knn import knn_evaluate

    k = cfg["knn"]
    was_training = model.training
    backbone = pooled_backbone(model.encoder_q).eval()
    # Its data loaders draw seeds from the global RNG: fork it, so that a run with evaluations
    # follows the same trajectory as one without, and a resumed run as the straight one.
    cuda = [device] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=cuda):
            return knn_evaluate(backbone, os.path.join(k["path"], "train"), os.path.join(k["path"], "val"),
                                image_size=k["image_size"] or cfg["data"]["crop_size"], k=k["k"], t=k["t"],
                                batch_size=k["batch_size"], num_workers=0, device=device, precise_bn=precise_bn)
    finally:
        model.train(was_training)


def check_resumable(state, cfg, world_size, iters_per_epoch, path):
    """A checkpoint taken mid-epoch continues only with the same data layout (batch x processes,
    iterations per epoch): its position is an iteration count of that layout. At an epoch
    boundary anything may change."""
    if not state["iter"]:
        return
    saved_world = state.get("world_size", world_size)
    saved_batch = (state.get("config") or {}).get("batch_size", cfg["batch_size"])
    saved_iters = state.get("iters_per_epoch", iters_per_epoch)
    if (saved_world, saved_batch, saved_iters) != (world_size, cfg["batch_size"], iters_per_epoch) \
            or state["iter"] > iters_per_epoch:
        raise ConfigError(
            f"{path} was written at iteration {state['iter']} of epoch {state['epoch']} with batch_size "
            f"{saved_batch} x {saved_world} processes, {saved_iters} iterations per epoch; this run has "
            f"batch_size {cfg['batch_size']} x {world_size} processes, {iters_per_epoch} iterations per epoch "
            f"(batch size, process count or data changed), so its position in the epoch means nothing here.\n"
            f"  Fix: resume with the same batch_size, number of processes and data, or from a checkpoint "
            f"written at the end of an epoch (checkpoint.every_iters aside, one is written after every epoch).")


def restore_rank_state(state, ctx, generators, loader, global_step):
    """Each rank's own augmentation/shuffle streams and skip count; fresh streams if the process
    count changed (the trajectory cannot continue then), offset by the step so they do not repeat."""
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        mine = ranks[ctx.rank]
        for name, g in generators.items():
            if name in mine["generators"]:
                g.set_state(mine["generators"][name])
        loader.restore_skipped(mine["skipped_images"])
        return
    if ranks is None and state.get("world_size", 1) == ctx.world_size == 1 and "rng" in state:
        ckpt.set_rng_state(state["rng"], generators)  # older one-process checkpoints: streams in "rng"
    else:
        for g in generators.values():
            g.manual_seed(g.initial_seed() + 1_000_003 * global_step)
        if ctx.is_main:
            why = (f"the checkpoint was written by {state.get('world_size')} processes, this run has {ctx.world_size}"
                   if ranks is not None else "the checkpoint does not hold each process's streams (older format)")
            print(f"note: {why}: augmentation and shuffling streams restart (the run goes on, on another path)")
    loader.restore_skipped(state.get("skipped_images", 0) if ctx.is_main else 0)


def check_finite(model, global_step, last_path):
    """Refuse to checkpoint diverged weights (one device read per checkpoint): the loss is read only
    at log intervals, and --resume auto must never pick up a NaN model."""
    tensors = [p.detach() for p in model.encoder_q.parameters()] + [model.queue]
    if not bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        raise FloatingPointError(
            f"weights are not finite at step {global_step} (training diverged): no checkpoint written. "
            f"The newest checkpoint ({last_path or 'none yet in this run'}) is from before; lower optim.lr "
            f"or use amp=bf16/off and resume it with --resume auto")


def train(cfg: dict, data_path, out_dir, resume=None, force=False) -> dict:
    """Pretrain MoCo as ``cfg`` says; returns a summary dict.

    Launch with ``python`` (one process) or ``torchrun`` / srun / submitit (many: the
    environment names rank and world size). ``resume``: None, "auto" (newest valid
    checkpoint in ``out_dir``, or a fresh start) or a checkpoint path.
    """
    ctx = du.init_distributed(cfg["device"])
    try:
        return _train(cfg, data_path, out_dir, resume, force, ctx)
    finally:
        du.cleanup()


def _train(cfg, data_path, out_dir, resume, force, ctx):
    out_dir = os.fspath(out_dir)
    device = ctx.device
    check_for_world(cfg, ctx.world_size)
    # Data first: a wrong path must fail in a second, not after building a ResNet-50.
    loader = build_loader(cfg, data_path, ctx)
    iters_per_epoch = len(loader)
    _prepare_out_dir(out_dir, resume, force, ctx.is_main)

    if cfg["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(cfg["seed"])  # same seed on every rank: identical encoders and queue

    amp_dtype, channels_last = resolve_precision(cfg, device)
    model = build_model(cfg).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    compile_encoders(cfg, model)
    shuffle_gen = torch.Generator(device=device)
    shuffle_gen.manual_seed(cfg["seed"] + 7919 * ctx.rank)
    model.set_shuffle_generator(shuffle_gen)
    generators = {"shuffle": shuffle_gen}
    device_augment = build_device_augment(cfg, ctx, channels_last)
    if device_augment is not None:
        generators["device_augment"] = device_augment.generator
    optimizer = build_optimizer(cfg, model, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    base_lr = scaled_lr(cfg, ctx.world_size)

    epoch, start_iter, global_step = 0, 0, 0
    resumed_from, state = ckpt.resolve_resume(resume, out_dir)
    if state is not None:
        check_resumable(state, cfg, ctx.world_size, iters_per_epoch, resumed_from)
        ckpt.load_model_state(model, state["state_dict"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        if "rng" in state:
            ckpt.set_rng_state(state["rng"])
        epoch, start_iter, global_step = state["epoch"], state["iter"], state["global_step"]
        restore_rank_state(state, ctx, generators, loader, global_step)
        if ctx.is_main:
            print(f"resumed from {resumed_from}: epoch {epoch}, iteration {start_iter} of {iters_per_epoch}, step {global_step}")
            changed = resume_differences(state.get("config") or {}, cfg)
            if changed:
                print("note: settings changed since the checkpoint: " + "; ".join(changed))
            for moved in ckpt.set_aside_newer(out_dir, global_step):
                print(f"note: {moved} is from after the resumed step (an abandoned branch of this run): "
                      f"moved aside so that it is neither pruned nor resumed")
        del state
    elif resume == "auto" and ctx.is_main:
        print(f"--resume auto: no checkpoint in {out_dir!r}, starting from scratch")

    if ctx.world_size > 1:
        ddp = DistributedDataParallel(model.encoder_q, device_ids=[device.index] if device.type == "cuda" else None)
        model.wrap_query_encoder(ddp)
    elif (model.shuffle_mode() == "off" or model.bn_splits == 1) and ctx.is_main:
        print("warning: one process and model.bn_splits=1: no shuffling BN, the model can cheat through BN "
              "statistics (MoCo v1 Sec. 3.3); set model.bn_splits to 4-8 for single-process runs")

    epochs = cfg["optim"]["epochs"]
    total_iters = epochs * iters_per_epoch
    stop_at = min(total_iters, cfg["max_iters"] or total_iters)
    images_per_step = cfg["batch_size"] * ctx.world_size
    log_every, ckpt_every = cfg["log"]["every_iters"], cfg["checkpoint"]["every_iters"]
    progress = ProgressLogger(out_dir, stop_at, enabled=ctx.is_main, tensorboard=cfg["log"]["tensorboard"])
    if ctx.is_main:
        atomic_write_bytes(os.path.join(out_dir, "config.yaml"), dump(cfg).encode())
        print(f"MoCo {cfg['model']['arch']} on {device} x{ctx.world_size}: {iters_per_epoch} it/epoch, "
              f"batch {images_per_step}, lr {base_lr:g}, amp {amp_dtype}, "
              f"{'in-memory' if cfg['data']['in_memory'] else 'fast' if device_augment is not None else 'reference'} "
              f"data pipeline, out {out_dir}")

    def save(ep, it):
        check_finite(model, global_step, last_path or resumed_from)  # every rank: their weights are identical
        # Per-rank state (augmentation and shuffle streams, skip counts) from every rank.
        ranks = du.all_gather_object({"generators": {n: g.get_state() for n, g in generators.items()},
                                      "skipped_images": loader.skipped})
        if ctx.is_main:
            state = {
                "epoch": ep, "iter": it, "global_step": global_step, "arch": cfg["model"]["arch"],
                "state_dict": ckpt.model_state_dict(model), "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": ckpt.get_rng_state(generators), "config": cfg, "world_size": ctx.world_size,
                "iters_per_epoch": iters_per_epoch, "ranks": ranks,
                "skipped_images": sum(r["skipped_images"] for r in ranks),
            }
            path = ckpt.save_checkpoint(state, out_dir, keep_last=cfg["checkpoint"]["keep_last"])
        else:
            path = None
        du.barrier()  # nobody runs ahead of (or exits before) the write
        return path

    def views(im_q, im_k):
        """A loader batch -> the two augmented views on the device, as the model takes them."""
        if cfg["data"]["decode"] == "device":  # bytes + crop boxes -> uint8 views on the device
            im_q, im_k, failed = decode_two_crops_on_device(im_q, im_k, cfg["data"]["crop_size"], device)
            if failed:
                loader.report_skipped(failed)
        if device_augment is not None:  # uint8 crops -> colour, blur, normalise on the device
            return (device_augment(im_q.to(device, non_blocking=True)),
                    device_augment(im_k.to(device, non_blocking=True)))
        mf = torch.channels_last if channels_last else torch.contiguous_format
        return (im_q.to(device, non_blocking=True, memory_format=mf),
                im_k.to(device, non_blocking=True, memory_format=mf))

    if cfg["model"]["queue_init"] == "keys" and global_step == 0:
        n = fill_queue_with_keys(model, loader, epochs, views)
        if ctx.is_main:
            print(f"queue filled with {n} keys of real images (model.queue_init=keys; the paper starts "
                  f"from random vectors)")

    knn_history, last_path, last_loss = [], None, float("nan")

    def knn_eval(random_init=False):
        metrics = {}
        if ctx.is_main:
            metrics["knn_top1"] = _knn(cfg, model, device)
            if random_init:  # its BN statistics are placeholders; also with them estimated from data
                metrics["knn_top1_precise_bn"] = _knn(cfg, model, device, precise_bn=True)
        du.barrier()
        if ctx.is_main:
            knn_history.append((epoch, metrics["knn_top1"]))
            progress.log_eval(global_step, epoch, **metrics)

    if cfg["knn"]["every_epochs"] and global_step == 0:
        knn_eval(random_init=True)  # the same network at random init: the baseline the curve must rise above
    model.train()
    progress.start(global_step)
    t_start, step_start = time.perf_counter(), global_step
    loss_sum, stats_sum = torch.zeros((), device=device), torch.zeros(3, device=device)
    n_sum = 0
    while epoch < epochs and global_step < stop_at:
        loader.set_epoch(epoch, start_iter=start_iter)
        it = start_iter
        for im_q, im_k in loader:
            lr = lr_at(cfg, epoch + it / iters_per_epoch, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            im_q, im_k = views(im_q, im_k)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits, labels = model(im_q, im_k)
                loss = info_nce_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum = loss_sum + loss.detach()
            stats_sum = stats_sum + contrast_stats(logits.detach(), model.T)
            n_sum += 1
            it += 1
            global_step += 1

            if global_step % log_every == 0 or global_step == stop_at:
                # one read of the device per log interval: loss, top-1, q.k+, q.k-
                last_loss, pos_top1, sim_pos, sim_neg = (torch.cat([loss_sum.view(1), stats_sum]) / n_sum).tolist()
                if not math.isfinite(last_loss):
                    raise FloatingPointError(
                        f"loss is {last_loss} at step {global_step}: lower optim.lr or use amp=bf16/off; "
                        f"resume from the last checkpoint with --resume auto")
                progress.log_train(global_step, epoch, it, iters_per_epoch, images_per_step, loss=last_loss,
                                   pos_top1=pos_top1 * 100, sim_pos=sim_pos, sim_neg=sim_neg, lr=lr,
                                   skipped=loader.skipped)
                loss_sum, stats_sum = torch.zeros((), device=device), torch.zeros(3, device=device)
                n_sum = 0
            end_of_epoch = it == iters_per_epoch
            if end_of_epoch:
                break  # the epoch checkpoint is written below
            if global_step % ckpt_every == 0 or global_step == stop_at:
                last_path = save(epoch, it)
            if global_step == stop_at:
                break
        if it == iters_per_epoch:  # finished the epoch
            epoch, start_iter = epoch + 1, 0
            last_path = save(epoch, 0)
            every = cfg["knn"]["every_epochs"]
            if every and (epoch % every == 0 or epoch == epochs):
                knn_eval()
                progress.start(global_step)
        else:
            break  # stopped at max_iters mid-epoch

    elapsed = time.perf_counter() - t_start
    skipped = sum(du.all_gather_object(loader.skipped))  # all ranks'
    progress.close()
    plots = plot_curves(out_dir) if ctx.is_main else []
    summary = {
        "global_step": global_step, "epoch": epoch, "checkpoint": last_path, "final_loss": last_loss,
        "knn": knn_history, "images_per_s": (global_step - step_start) * images_per_step / elapsed if elapsed else None,
        "plots": plots, "resumed_from": resumed_from, "skipped_images": skipped,
    }
    if ctx.is_main:
        print(f"done: step {global_step}, epoch {epoch}, loss {last_loss:.4f}, checkpoint {last_path}")
    return summary
