"""The MoCo pretraining loop: one function, :func:`train`, for one process or many.

Order of work: read the data (clear errors before anything expensive), build the
model (``build.py``), resume if asked (``resume.py``), then epochs of SGD steps with atomic
checkpoints every
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
from pretrain.engine.build import (
    build_device_augment,
    build_loader,
    build_model,
    build_optimizer,
    compile_encoders,
    resolve_precision,
)
from pretrain.engine.config import check_for_world, dump, resume_differences, scaled_lr
from pretrain.engine.progress import ProgressLogger, plot_curves
from pretrain.engine.resume import check_resumable, restore_rank_state
from pretrain.io import atomic_write_bytes
from pretrain.model.backbone import pooled_backbone
from pretrain.model.moco import contrast_stats, info_nce_loss
from pretrain.model.queue_fill import fill_queue_with_keys


def lr_at(cfg: dict, epoch_float: float, base_lr: float) -> float:
    """Learning rate at a (fractional) epoch: optional linear warm-up, then step or cosine."""
    o = cfg["optim"]
    return schedule.lr_at(
        base_lr,
        epoch_float,
        epochs=o["epochs"],
        schedule=o["schedule"],
        warmup_epochs=o["warmup_epochs"],
        milestones=o["milestones"],
        gamma=o["gamma"],
    )


def _prepare_out_dir(out_dir, resume, force, is_main):
    """Refuse to start over an existing run unless asked to resume it or --force."""
    existing = ckpt.list_checkpoints(out_dir)
    if existing and resume is None and not force:
        raise FileExistsError(
            f"{out_dir!r} already holds a run ({len(existing)} checkpoints, "
            f"newest {os.path.basename(existing[0][1])}). "
            f"Continue it with --resume auto, choose another --out, or pass --force to discard it."
        )
    if force and resume is None and is_main:
        for _, path in existing:
            os.remove(path)
        for name in (
            "last",
            "metrics.jsonl",
            "loss_curve.png",
            "similarity_curve.png",
            "knn_curve.png",
        ):
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
            return knn_evaluate(
                backbone,
                os.path.join(k["path"], "train"),
                os.path.join(k["path"], "val"),
                image_size=k["image_size"] or cfg["data"]["crop_size"],
                k=k["k"],
                t=k["t"],
                batch_size=k["batch_size"],
                num_workers=0,
                device=device,
                precise_bn=precise_bn,
            )
    finally:
        model.train(was_training)


def check_finite(model, global_step, last_path):
    """Refuse to checkpoint diverged weights (one device read per checkpoint): the loss is read only
    at log intervals, and --resume auto must never pick up a NaN model."""
    tensors = [p.detach() for p in model.encoder_q.parameters()] + [model.queue]
    if not bool(torch.isfinite(torch.stack(torch._foreach_norm(tensors))).all()):
        raise FloatingPointError(
            f"weights are not finite at step {global_step} (training "
            "diverged): no checkpoint written. "
            f"The newest checkpoint ({last_path or 'none yet in this run'}) is "
            "from before; lower optim.lr "
            f"or use amp=bf16/off and resume it with --resume auto"
        )


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
            print(
                f"resumed from {resumed_from}: epoch {epoch}, iteration "
                f"{start_iter} of {iters_per_epoch}, step {global_step}"
            )
            changed = resume_differences(state.get("config") or {}, cfg)
            if changed:
                print("note: settings changed since the checkpoint: " + "; ".join(changed))
            for moved in ckpt.set_aside_newer(out_dir, global_step):
                print(
                    f"note: {moved} is from after the resumed step (an abandoned "
                    "branch of this run): "
                    f"moved aside so that it is neither pruned nor resumed"
                )
        del state
    elif resume == "auto" and ctx.is_main:
        print(f"--resume auto: no checkpoint in {out_dir!r}, starting from scratch")

    if ctx.world_size > 1:
        ddp = DistributedDataParallel(
            model.encoder_q, device_ids=[device.index] if device.type == "cuda" else None
        )
        model.wrap_query_encoder(ddp)
    elif (model.shuffle_mode() == "off" or model.bn_splits == 1) and ctx.is_main:
        print(
            "warning: one process and model.bn_splits=1: no shuffling BN, the "
            "model can cheat through BN "
            "statistics (MoCo v1 Sec. 3.3); set model.bn_splits to 4-8 for single-process runs"
        )

    epochs = cfg["optim"]["epochs"]
    total_iters = epochs * iters_per_epoch
    stop_at = min(total_iters, cfg["max_iters"] or total_iters)
    images_per_step = cfg["batch_size"] * ctx.world_size
    log_every, ckpt_every = cfg["log"]["every_iters"], cfg["checkpoint"]["every_iters"]
    progress = ProgressLogger(
        out_dir, stop_at, enabled=ctx.is_main, tensorboard=cfg["log"]["tensorboard"]
    )
    if ctx.is_main:
        atomic_write_bytes(os.path.join(out_dir, "config.yaml"), dump(cfg).encode())
        pipeline = (
            "in-memory"
            if cfg["data"]["in_memory"]
            else ("fast" if device_augment is not None else "reference")
        )
        print(
            f"MoCo {cfg['model']['arch']} on {device} x{ctx.world_size}: "
            f"{iters_per_epoch} it/epoch, "
            f"batch {images_per_step}, lr {base_lr:g}, amp {amp_dtype}, "
            f"{pipeline} "
            f"data pipeline, out {out_dir}"
        )

    def save(ep, it):
        check_finite(
            model, global_step, last_path or resumed_from
        )  # every rank: their weights are identical
        # Per-rank state (augmentation and shuffle streams, skip counts) from every rank.
        ranks = du.all_gather_object(
            {
                "generators": {n: g.get_state() for n, g in generators.items()},
                "skipped_images": loader.skipped,
            }
        )
        if ctx.is_main:
            state = {
                "epoch": ep,
                "iter": it,
                "global_step": global_step,
                "arch": cfg["model"]["arch"],
                "state_dict": ckpt.model_state_dict(model),
                "optimizer": optimizer.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "rng": ckpt.get_rng_state(generators),
                "config": cfg,
                "world_size": ctx.world_size,
                "iters_per_epoch": iters_per_epoch,
                "ranks": ranks,
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
            im_q, im_k, failed = decode_two_crops_on_device(
                im_q, im_k, cfg["data"]["crop_size"], device
            )
            if failed:
                loader.report_skipped(failed)
        if device_augment is not None:  # uint8 crops -> colour, blur, normalise on the device
            return (
                device_augment(im_q.to(device, non_blocking=True)),
                device_augment(im_k.to(device, non_blocking=True)),
            )
        mf = torch.channels_last if channels_last else torch.contiguous_format
        return (
            im_q.to(device, non_blocking=True, memory_format=mf),
            im_k.to(device, non_blocking=True, memory_format=mf),
        )

    if cfg["model"]["queue_init"] == "keys" and global_step == 0:
        n = fill_queue_with_keys(model, loader, epochs, views)
        if ctx.is_main:
            print(
                f"queue filled with {n} keys of real images "
                "(model.queue_init=keys; the paper starts "
                f"from random vectors)"
            )

    knn_history, last_path, last_loss = [], None, float("nan")

    def knn_eval(random_init=False):
        metrics = {}
        if ctx.is_main:
            metrics["knn_top1"] = _knn(cfg, model, device)
            if (
                random_init
            ):  # its BN statistics are placeholders; also with them estimated from data
                metrics["knn_top1_precise_bn"] = _knn(cfg, model, device, precise_bn=True)
        du.barrier()
        if ctx.is_main:
            knn_history.append((epoch, metrics["knn_top1"]))
            progress.log_eval(global_step, epoch, **metrics)

    if cfg["knn"]["every_epochs"] and global_step == 0:
        knn_eval(
            random_init=True
        )  # the same network at random init: the baseline the curve must rise above
    model.train()
    progress.start(global_step)
    t_start, step_start = time.perf_counter(), global_step
    loss_sum, stats_sum = torch.zeros((), device=device), torch.zeros(4, device=device)
    n_sum = 0
    while epoch < epochs and global_step < stop_at:
        loader.set_epoch(epoch, start_iter=start_iter)
        it = start_iter
        for im_q, im_k in loader:
            lr = lr_at(cfg, epoch + it / iters_per_epoch, base_lr)
            for group in optimizer.param_groups:
                group["lr"] = lr
            im_q, im_k = views(im_q, im_k)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                logits, labels = model(im_q, im_k)
                loss = info_nce_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum = loss_sum + loss.detach()
            stats_sum = stats_sum + torch.cat(
                [contrast_stats(logits.detach(), model.T), model.last_query_similarity.view(1)]
            )
            n_sum += 1
            it += 1
            global_step += 1

            if global_step % log_every == 0 or global_step == stop_at:
                # one read of the device per log interval: loss, top-1, q.k+, q.k-, q.q'
                last_loss, pos_top1, sim_pos, sim_neg, sim_qq = (
                    torch.cat([loss_sum.view(1), stats_sum]) / n_sum
                ).tolist()
                if not math.isfinite(last_loss):
                    raise FloatingPointError(
                        f"loss is {last_loss} at step {global_step}: lower optim.lr or use "
                        "amp=bf16/off; "
                        f"resume from the last checkpoint with --resume auto"
                    )
                progress.log_train(
                    global_step,
                    epoch,
                    it,
                    iters_per_epoch,
                    images_per_step,
                    loss=last_loss,
                    pos_top1=pos_top1 * 100,
                    sim_pos=sim_pos,
                    sim_neg=sim_neg,
                    sim_qq=sim_qq,
                    lr=lr,
                    skipped=loader.skipped,
                )
                loss_sum, stats_sum = torch.zeros((), device=device), torch.zeros(4, device=device)
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
        "global_step": global_step,
        "epoch": epoch,
        "checkpoint": last_path,
        "final_loss": last_loss,
        "knn": knn_history,
        "images_per_s": (global_step - step_start) * images_per_step / elapsed if elapsed else None,
        "plots": plots,
        "resumed_from": resumed_from,
        "skipped_images": skipped,
    }
    if ctx.is_main:
        print(
            f"done: step {global_step}, epoch {epoch}, loss {last_loss:.4f}, checkpoint {last_path}"
        )
    return summary
