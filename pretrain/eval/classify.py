"""Pieces shared by the linear protocol and the supervised baseline: accuracy, the
evaluation pass, one training epoch with progress, and the metrics file."""

import json
import os

import torch
import torch.nn.functional as F

from pretrain.io import atomic_write_bytes
from pretrain.meters import Rate
from pretrain.schedule import lr_at


def default_device(device=None):
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def topk_correct(logits, target, topk=(1, 5)):
    """Number of samples whose label is among the top k predictions, per k (k capped at
    #classes).
    """
    maxk = min(max(topk), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target[:, None])
    return [int(hit[:, : min(k, maxk)].any(dim=1).sum()) for k in topk]


@torch.no_grad()
def evaluate(model, loader, device):
    """``{"top1": %, "top5": %, "loss": mean CE}`` of ``model`` (put in eval mode) on ``loader``."""
    model.eval()
    n, c1, c5, loss = 0, 0, 0, 0.0
    for images, target in loader:
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            logits = model(images)
        logits = logits.float()
        loss += float(F.cross_entropy(logits, target, reduction="sum"))
        a, b = topk_correct(logits, target)
        c1, c5, n = c1 + a, c5 + b, n + len(target)
    return {"top1": 100.0 * c1 / n, "top5": 100.0 * c5 / n, "loss": loss / n}


class Progress:
    """Prints ``[tag] epoch e/E iter i/N loss .. lr .. img/s .. ETA ..`` every ``every``
    iterations.
    """

    def __init__(self, tag, total_iters, every=20, printer=print):
        self.tag, self.total, self.every, self.printer = tag, total_iters, every, printer
        self.done, self.images, self.rate = 0, 0, Rate(total_iters)

    def step(self, epoch, epochs, it, iters, batch, loss, lr):
        self.done += 1
        self.images += batch
        if self.every and (it + 1) % self.every == 0 or it + 1 == iters:
            images_per_s = self.rate.per_second(self.done) * self.images / self.done
            self.printer(
                f"[{self.tag}] epoch {epoch + 1}/{epochs} iter {it + 1}/{iters} "
                f"loss {loss:.4f} lr {lr:.4g} {images_per_s:.1f} img/s ETA "
                f"{self.rate.eta(self.done)}",
                flush=True,
            )


def cosine_lr(base_lr, step, total_steps):
    return lr_at(base_lr, step, epochs=total_steps, schedule="cosine")


def write_jsonl(path, records):
    """Rewrite the whole metrics file atomically (records live in the checkpoint, so a
    resumed run never duplicates lines)."""
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in records).encode())


class ClassMismatchError(ValueError):
    """The train and val folders do not hold the same class folders."""


def check_same_classes(train_classes, val_classes):
    """``train_classes`` if both splits have the same class folders, else
    :class:`ClassMismatchError`.

    Labels are folder indices in sorted order: with a class missing from one split, val's
    "c" gets train's index of "b", and top-1 silently measures the wrong thing.
    """
    if list(train_classes) != list(val_classes):
        only_train = sorted(set(train_classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(train_classes))
        raise ClassMismatchError(
            f"train classes {list(train_classes)} differ from val classes {list(val_classes)} "
            f"(only in train: {only_train}, only in val: {only_val}); both "
            "need the same class folders"
        )
    return train_classes


def labeled_loaders(data, *, image_size, batch_size, num_workers, crop_scale=None, hflip=True):
    """Train (crop + flip) and val (resize + center crop) loaders of ``data/{train,val}/<class>/``,
    checked to hold the same classes."""
    from pretrain.data import build_labeled_loader

    train = build_labeled_loader(
        os.path.join(data, "train"),
        image_size=image_size,
        batch_size=batch_size,
        train=True,
        num_workers=num_workers,
        crop_scale=crop_scale,
        hflip=hflip,
    )
    val = build_labeled_loader(
        os.path.join(data, "val"),
        image_size=image_size,
        batch_size=batch_size,
        train=False,
        num_workers=num_workers,
    )
    check_same_classes(train.dataset.classes, val.dataset.classes)
    return train, val
