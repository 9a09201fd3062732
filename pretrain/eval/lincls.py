"""Linear classification protocol (MoCo paper Sec. 4.1, reference ``main_lincls.py``).

A frozen backbone (BN in eval mode, no gradients), one linear fc on the pooled features,
SGD momentum 0.9, lr 30, weight decay 0, lr x0.1 at epochs 60 and 80 of 100. At the end
the backbone is compared with the checkpoint it was loaded from: training a linear
classifier must not change a single backbone weight or BN statistic.
"""

import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.eval.classify import Progress, default_device, evaluate, labeled_loaders, write_jsonl
from pretrain.io import atomic_torch_save, atomic_write_bytes, safe_torch_load
from pretrain.schedule import lr_at
from pretrain.weights.backbone import load_backbone, pooled_features

CHECKPOINT = "lincls_checkpoint.pth"
RESULT = "lincls_result.json"


class BackboneChangedError(RuntimeError):
    """The frozen backbone differs from the weights it was loaded with."""


def check_backbone_unchanged(model, reference_state):
    """Raise :class:`BackboneChangedError` unless every backbone tensor equals ``reference_state``.

    The reference's ``sanity_check``: a protocol bug (BN in train mode, a parameter left
    in the optimizer) would otherwise silently report a fine-tuning result.
    """
    current = model.state_dict()
    changed = [
        k
        for k, v in reference_state.items()
        if not k.startswith("fc.") and not torch.equal(current[k].detach().cpu(), v.cpu())
    ]
    if changed:
        raise BackboneChangedError(
            f"{len(changed)} backbone tensor(s) changed during linear classification (e.g. "
            f"{changed[:5]}); the backbone must stay frozen with BN in eval mode"
        )


def build_linear_model(checkpoint, num_classes, arch=None):
    """``(backbone, fc, backbone_state)``: the pretrained backbone (pooled features out,
    frozen) and a fresh linear classifier (normal std 0.01, bias 0, as the reference)."""
    model, state = load_backbone(checkpoint, arch=arch, num_classes=num_classes)
    fc = pooled_features(model)
    for p in model.parameters():
        p.requires_grad = False
    nn.init.normal_(fc.weight, mean=0.0, std=0.01)
    nn.init.zeros_(fc.bias)
    return model, fc, state


def step_lr(base_lr, epoch, schedule):
    """lr x0.1 at each milestone epoch reached (reference ``adjust_learning_rate``)."""
    return lr_at(base_lr, epoch, epochs=None, schedule="step", milestones=schedule, gamma=0.1)


def train_linear(
    checkpoint,
    data,
    out_dir,
    *,
    arch=None,
    epochs=100,
    lr=30.0,
    schedule=(60, 80),
    momentum=0.9,
    weight_decay=0.0,
    batch_size=256,
    image_size=224,
    num_workers=4,
    device=None,
    resume=True,
    force=False,
    print_freq=50,
    seed=0,
    printer=print,
):
    """Run the protocol on ``data/train`` and ``data/val``; returns the final metrics dict
    ``{"top1", "top5", "best_top1", "epochs", ...}`` (also written to
    ``out_dir/lincls_result.json``).

    Resumes from ``out_dir/lincls_checkpoint.pth`` (saved atomically every epoch) when
    ``resume``; refuses to overwrite a finished run unless ``force``.
    """
    device = default_device(device)
    os.makedirs(out_dir, exist_ok=True)
    result_path, ckpt_path = os.path.join(out_dir, RESULT), os.path.join(out_dir, CHECKPOINT)
    if os.path.exists(result_path) and not force:
        raise FileExistsError(
            f"{result_path!r} exists (a finished linear evaluation); pass --force "
            f"to run again, or choose another --out"
        )
    if force and os.path.exists(ckpt_path):
        os.remove(ckpt_path)
    torch.manual_seed(seed)
    train_loader, val_loader = labeled_loaders(
        data, image_size=image_size, batch_size=batch_size, num_workers=num_workers
    )
    classes = train_loader.dataset.classes  # the same as val's (labeled_loaders checks)
    backbone, fc, backbone_state = build_linear_model(checkpoint, len(classes), arch=arch)
    backbone.to(device)
    fc.to(device)
    classifier = nn.Sequential(backbone, fc)
    optimizer = torch.optim.SGD(fc.parameters(), lr, momentum=momentum, weight_decay=weight_decay)
    start_epoch, best, records = 0, 0.0, []
    if resume and os.path.exists(ckpt_path):
        state = safe_torch_load(ckpt_path)
        fc.load_state_dict(state["fc"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch, best, records = (
            state["epoch"],
            state["best_top1"],
            json.loads(state["records"]),
        )
        if (
            "torch_rng" in state
        ):  # the crops and shuffles of the epochs to come, as in an unbroken run
            torch.set_rng_state(state["torch_rng"])
        printer(f"[lincls] resumed from {ckpt_path} at epoch {start_epoch}", flush=True)

    progress = Progress(
        "lincls", (epochs - start_epoch) * len(train_loader), every=print_freq, printer=printer
    )
    metrics = {}
    for epoch in range(start_epoch, epochs):
        for group in optimizer.param_groups:
            group["lr"] = step_lr(lr, epoch, schedule)
        backbone.eval()  # frozen BN statistics, as in the reference
        for it, (images, target) in enumerate(train_loader):
            images, target = (
                images.to(device, non_blocking=True),
                target.to(device, non_blocking=True),
            )
            # Mixed precision (CUDA only) for the frozen backbone; the fc and its gradients
            # stay fp32, so no loss scaling is needed.
            with torch.no_grad(), torch.autocast(device.type, enabled=device.type == "cuda"):
                features = backbone(images)
            loss = F.cross_entropy(fc(features.float()), target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # The loss stays a device tensor: Progress formats it (one host sync) only on the
            # iterations it prints; ``loss.item()`` here would stall the GPU every step.
            progress.step(
                epoch,
                epochs,
                it,
                len(train_loader),
                len(target),
                loss.detach(),
                optimizer.param_groups[0]["lr"],
            )
        metrics = evaluate(classifier, val_loader, device)
        best = max(best, metrics["top1"])
        records.append(dict(epoch=epoch + 1, lr=optimizer.param_groups[0]["lr"], **metrics))
        printer(
            f"[lincls] epoch {epoch + 1}/{epochs} val top-1 {metrics['top1']:.2f} "
            f"top-5 {metrics['top5']:.2f} (best top-1 {best:.2f})",
            flush=True,
        )
        atomic_torch_save(
            {
                "epoch": epoch + 1,
                "fc": fc.state_dict(),
                "optimizer": optimizer.state_dict(),
                "best_top1": best,
                "records": json.dumps(records),
                "classes": list(classes),
                "torch_rng": torch.get_rng_state(),
            },
            ckpt_path,
        )
        write_jsonl(os.path.join(out_dir, "metrics.jsonl"), records)

    if not metrics:  # resumed a finished run: evaluate once more
        metrics = evaluate(classifier, val_loader, device)
    check_backbone_unchanged(backbone, backbone_state)
    result = {
        "top1": metrics["top1"],
        "top5": metrics["top5"],
        "best_top1": max(best, metrics["top1"]),
        "epochs": epochs,
        "checkpoint": os.path.abspath(checkpoint),
        "classes": len(classes),
    }
    atomic_write_bytes(result_path, (json.dumps(result, indent=1) + "\n").encode())
    printer(
        f"[lincls] final top-1 {result['top1']:.2f} top-5 {result['top5']:.2f} -> {result_path}",
        flush=True,
    )
    return result
