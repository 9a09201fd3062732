"""Supervised baseline: the same network trained with labels on the same images and budget.

The demo's "supervised" row: what MoCo's self-supervised features are compared with.
Cosine learning rate (per iteration), SGD momentum 0.9. The final weights are a plain
torchvision state dict (``conv1.weight``, ``layer1.0...``, ``fc.*``), so they load into
``torchvision.models.resnet18`` and go through the same converter as MoCo's.
"""

import json
import os

import torch
import torch.nn.functional as F
import torchvision

from pretrain.eval.classify import (
    Progress,
    default_device,
    evaluate,
    labeled_loaders,
    write_jsonl,
)
from pretrain.io import atomic_torch_save, atomic_write_bytes, safe_torch_load
from pretrain.schedule import warmup_cosine_lr

CHECKPOINT = "checkpoint.pth"
FINAL = "model_final.pth"


def train_supervised(
    data,
    out_dir,
    *,
    arch="resnet18",
    epochs=100,
    image_size=224,
    batch_size=256,
    lr=0.1,
    momentum=0.9,
    weight_decay=1e-4,
    num_workers=4,
    device=None,
    resume=True,
    force=False,
    print_freq=50,
    seed=0,
    crop_scale=None,
    warmup_epochs=0.0,
    hflip=True,
    printer=print,
):
    """Train ``arch`` on ``data/train`` (class folders), evaluate on ``data/val`` every epoch.

    Writes ``out_dir/checkpoint.pth`` (resume state, every epoch), ``metrics.jsonl`` and, at
    the end, ``model_final.pth`` -- all atomically. Returns the last epoch's metrics
    ``{"top1", "top5", "loss", "epoch", ...}``. A finished run in ``out_dir`` with the same settings
    is kept and its metrics returned (with ``resume``); one with other settings is never
    overwritten unless ``force``.
    ``lr`` is per 256 images and scales linearly with ``batch_size`` (Goyal et al.), as the
    pretraining recipes do: 0.1 at 256, 0.025 at 64 (ResNet-18 from scratch stalls at chance on
    the demo digits with 0.1 at a batch of 64).
    ``warmup_epochs``: the lr rises linearly from 0 over these epochs, then follows the cosine
    (Goyal et al.: a from-scratch network at a high lr otherwise diverges or stalls early).
    ``hflip=False``: no mirrored crops (digits).
    """
    device = default_device(device)
    lr = lr * batch_size / 256
    final_path, ckpt_path = os.path.join(out_dir, FINAL), os.path.join(out_dir, CHECKPOINT)
    settings = _settings(
        arch,
        epochs,
        image_size,
        batch_size,
        lr,
        weight_decay,
        seed,
        crop_scale,
        warmup_epochs,
        hflip,
    )
    if os.path.exists(final_path) and not force:
        # A run killed after writing its final weights (e.g. the demo, before its stage marker)
        # is finished: its rerun must return that result, not fail.
        finished, why = (
            _finished_run(out_dir, settings) if resume else (None, "--no-resume was given")
        )
        if finished is not None:
            printer(
                f"[supervised] {final_path} is a finished run with these settings; kept as is",
                flush=True,
            )
            return finished
        raise FileExistsError(
            f"{final_path!r} exists (a finished supervised run; {why}); pass --force to "
            f"train again, or choose another --out"
        )
    os.makedirs(out_dir, exist_ok=True)
    if force and os.path.exists(ckpt_path):
        os.remove(ckpt_path)
    torch.manual_seed(seed)
    train_loader, val_loader = labeled_loaders(
        data,
        image_size=image_size,
        batch_size=batch_size,
        num_workers=num_workers,
        crop_scale=crop_scale,
        hflip=hflip,
    )
    classes = train_loader.dataset.classes
    model = torchvision.models.get_model(arch, weights=None, num_classes=len(classes)).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr, momentum=momentum, weight_decay=weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    start_epoch, records = 0, []
    if resume and os.path.exists(ckpt_path):
        state = safe_torch_load(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, records = state["epoch"], json.loads(state["records"])
        torch.set_rng_state(state["torch_rng"])
        printer(f"[supervised] resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    iters = len(train_loader)
    progress = Progress(
        "supervised", (epochs - start_epoch) * iters, every=print_freq, printer=printer
    )
    for epoch in range(start_epoch, epochs):
        model.train()
        for it, (images, target) in enumerate(train_loader):
            step_lr = warmup_cosine_lr(
                lr, epoch * iters + it, epochs * iters, warmup_epochs * iters
            )
            for group in optimizer.param_groups:
                group["lr"] = step_lr
            images, target = (
                images.to(device, non_blocking=True),
                target.to(device, non_blocking=True),
            )
            with torch.autocast(device.type, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(images).float(), target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            progress.step(epoch, epochs, it, iters, len(target), loss.item(), step_lr)
        metrics = evaluate(model, val_loader, device)
        records.append(dict(epoch=epoch + 1, train_loss=loss.item(), **metrics))
        printer(
            f"[supervised] epoch {epoch + 1}/{epochs} val top-1 {metrics['top1']:.2f} "
            f"top-5 {metrics['top5']:.2f}",
            flush=True,
        )
        atomic_torch_save(
            {
                "epoch": epoch + 1,
                "arch": arch,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "records": json.dumps(records),
                "torch_rng": torch.get_rng_state(),
                "classes": list(classes),
                "settings": settings,
            },
            ckpt_path,
        )
        write_jsonl(os.path.join(out_dir, "metrics.jsonl"), records)

    atomic_torch_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, final_path)
    atomic_write_bytes(os.path.join(out_dir, "classes.json"), json.dumps(list(classes)).encode())
    printer(f"[supervised] wrote {final_path}", flush=True)
    return dict(records[-1]) if records else {}


def _settings(
    arch,
    epochs,
    image_size,
    batch_size,
    lr,
    weight_decay,
    seed,
    crop_scale,
    warmup_epochs=0.0,
    hflip=True,
):
    """What determines the final weights (besides the data): a finished run is reused only if they
    match.
    """
    out = dict(
        arch=arch,
        epochs=epochs,
        image_size=image_size,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        crop_scale=list(crop_scale) if crop_scale else None,
    )
    if warmup_epochs:  # recorded only when used: runs from before they existed keep matching
        out["warmup_epochs"] = warmup_epochs
    if not hflip:
        out["hflip"] = False
    return out


def _finished_run(out_dir, settings):
    """``(metrics, None)`` if ``out_dir`` holds a complete run with ``settings``, else ``(None, why
    not)``.

    ``model_final.pth`` is written (atomically) only after the last epoch's checkpoint, so a final
    file next to a checkpoint at the last epoch, with the same settings, is that run's result.
    """
    ckpt_path = os.path.join(out_dir, CHECKPOINT)
    if not os.path.exists(ckpt_path):
        return None, f"no {CHECKPOINT} next to it to tell which settings it was trained with"
    state = safe_torch_load(ckpt_path)
    # Checkpoints written before settings were recorded: compare what they do record.
    theirs = dict(state.get("settings", {"arch": state.get("arch")}), epochs=state.get("epoch"))
    changed = [
        f"{k}={v!r} there, {settings.get(k)!r} asked"
        for k, v in theirs.items()
        if v != settings.get(k)
    ]
    if changed:
        return None, "trained with other settings: " + ", ".join(changed)
    # Killed between the final weights and classes.json: write what the checkpoint knows.
    classes_path = os.path.join(out_dir, "classes.json")
    if not os.path.exists(classes_path):
        atomic_write_bytes(classes_path, json.dumps(state["classes"]).encode())
    records = json.loads(state["records"])
    return (dict(records[-1]) if records else {}), None
