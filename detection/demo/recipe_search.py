"""The loop behind README's session-7 search for a MoCo recipe that learns the demo's digits.

A stand-alone MoCo (``pretrain.model.moco.MoCo``) training on digit stroke masks rendered from the
demo's scans (``detection.demo.data``) and coloured on the fly, with the kNN monitor (k=20) on
labeled renders against the random-init network (as is and with data BatchNorm statistics) and
raw pixels; or, with ``--supervised``, the same network classifying the 10 digits under the same
augmentation (the control the issue asks for). Everything is held in memory; one torch thread.

    python -m detection.demo.recipe_search --pair renders --style-per-scan --lr 0.005 \
        --scale 0.5 --bn-splits 2 --no-colour-aug --flip 0 --out r14.json

is the recipe that first beat the random network (README, Status). Colours: ``palette`` (one of
``--palette`` shared (background, stroke) pairs per image, both views alike), ``recolour`` (a new
random pair per view) or ``own`` (one random pair per image). Pairs: ``same`` (two crops of one
render, MoCo's default) or ``renders`` (the two views from two renders of one scan: its own
affine each). Not part of ``make demo``, which runs the recipe it found through the real trainer
(``configs/pretrain/demo.yaml`` on ``detection.demo.data``'s palette renders).
"""

import argparse
import dataclasses
import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from detection.demo.data import MIN_CONTRAST, _jittered_digit_alpha, _rng
from pretrain.data.augment import IMAGENET_MEAN, IMAGENET_STD
from pretrain.data.device_augment import DeviceAugment
from pretrain.data.memory import sample_boxes
from pretrain.eval.knn import extract_features, knn_scores, with_precise_bn
from pretrain.io import atomic_write_bytes
from pretrain.model.backbone import pooled_backbone
from pretrain.model.moco import MoCo, contrast_stats


def render_masks(scans, indices, seed, renders, size=64):
    """uint8 [renders * len(indices), 1, size, size] stroke masks, render-major: row
    ``r * len(indices) + j`` is render r of scan ``indices[j]`` (own affine per render)."""
    out = [
        _jittered_digit_alpha(scans[i], _rng(seed, 7 + r, i), size)
        for r in range(renders)
        for i in indices
    ]
    return torch.from_numpy(np.round(np.stack(out) * 255).astype(np.uint8))[:, None]


def random_colours(n, generator):
    """``n`` (background, stroke) colour pairs [n, 3, 1, 1] in [0, 1], at least MIN_CONTRAST
    apart: a stroke too close to its background is drawn again (>= 30 % of draws pass, even
    against mid grey)."""
    bg = torch.rand(n, 3, generator=generator)
    fg = torch.rand(n, 3, generator=generator)
    close = (fg - bg).norm(dim=1) < MIN_CONTRAST
    while close.any():
        fg[close] = torch.rand(int(close.sum()), 3, generator=generator)
        close = (fg - bg).norm(dim=1) < MIN_CONTRAST
    return bg.view(n, 3, 1, 1), fg.view(n, 3, 1, 1)


def colourise(alpha, bg, fg):
    """uint8 masks [N, 1, H, W] -> uint8 RGB [N, 3, H, W]: background where 0, stroke where 255."""
    a = alpha.float() / 255
    return ((bg * (1 - a) + fg * a) * 255).round().clamp(0, 255).to(torch.uint8)


def partner(index, n_scans, renders, generator):
    """For rows of :func:`render_masks`, a random render of the same scan (possibly the same)."""
    return index % n_scans + n_scans * torch.randint(renders, index.shape, generator=generator)


def crop_affine(images, boxes, flips, out_size, generator, rot_deg=0.0, shear=0.0):
    """RandomResizedCrop boxes (``pretrain.data.memory.sample_boxes``) with a random rotation of
    +-``rot_deg`` and shear of +-``shear`` on top, one ``grid_sample`` for the batch."""
    b = images.shape[0]
    cx, cy, w, h = boxes.unbind(1)
    ang = (torch.rand(b, generator=generator) * 2 - 1) * math.radians(rot_deg)
    sh = (torch.rand(b, generator=generator) * 2 - 1) * shear
    c, s = ang.cos(), ang.sin()
    fw = w * torch.where(flips, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)  # diag(w, h) @ rotation @ [[1, sh], [0, 1]]
    theta[:, 0, 0], theta[:, 0, 1] = fw * c, fw * (c * sh - s)
    theta[:, 1, 0], theta[:, 1, 1] = h * s, h * (s * sh + c)
    theta[:, 0, 2], theta[:, 1, 2] = 2 * cx - 1, 2 * cy - 1
    grid = F.affine_grid(theta, (b, 3, out_size, out_size), align_corners=False)
    out = F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )
    return out.round_().clamp_(0, 255).to(torch.uint8)


def normalise(images_u8, size):
    x = F.interpolate(images_u8.float(), size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    return (x - mean) / std


def knn_top1(bank, bank_labels, queries, labels):
    """kNN (k=20, t=0.1) top-1 % of L2-normalised flattened ``queries`` against ``bank``."""
    bank, queries = F.normalize(bank.flatten(1), dim=1), F.normalize(queries.flatten(1), dim=1)
    pred = knn_scores(queries, bank, bank_labels, k=20, t=0.1, num_classes=10).argmax(1)
    return 100.0 * (pred == labels).float().mean().item()


def network_knn(encoder, ev, data_bn=False):
    """kNN of ``encoder``'s pooled features (``pretrain.eval.knn``'s extraction); ``data_bn``: BN
    statistics re-estimated on the bank first (its precise BN)."""
    batches = {
        # batches of 128: the size the README rows' data-BN statistics were estimated with
        name: [
            (ev[name][i : i + 128], ev[f"{name}_y"][i : i + 128])
            for i in range(0, len(ev[name]), 128)
        ]
        for name in ("bank", "val")
    }
    net = pooled_backbone(encoder)
    if data_bn:
        net = with_precise_bn(net, batches["bank"], torch.device("cpu"))
    bank, bank_y = extract_features(net, batches["bank"], torch.device("cpu"))
    val, val_y = extract_features(net, batches["val"], torch.device("cpu"))
    return knn_top1(bank, bank_y, val, val_y)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--lr", type=float, default=0.005, help="at --batch-size, not per 256")
    p.add_argument("--K", type=int, default=1024)
    p.add_argument("--m", type=float, default=0.99)
    p.add_argument("--T", type=float, default=0.2)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--size", type=int, default=32, help="crop size fed to the network")
    p.add_argument("--renders", type=int, default=4, help="renders per train scan")
    p.add_argument("--scale", type=float, default=0.2, help="smallest crop area fraction")
    p.add_argument("--flip", type=float, default=0.5, help="mirror probability")
    p.add_argument("--rot", type=float, default=0.0, help="random rotation, +- degrees")
    p.add_argument("--shear", type=float, default=0.0)
    p.add_argument("--no-colour-aug", action="store_true", help="no jitter, grey or blur")
    p.add_argument("--colours", choices=("palette", "recolour", "own"), default="palette")
    p.add_argument("--palette", type=int, default=8, help="shared colour pairs")
    p.add_argument("--style-per-scan", action="store_true", help="a scan's renders share a pair")
    p.add_argument("--eval-colours", choices=("palette", "random"), default="palette")
    p.add_argument("--pair", choices=("same", "renders"), default="same")
    p.add_argument("--bn-splits", type=int, default=2)
    p.add_argument("--constant-lr", action="store_true")
    p.add_argument("--supervised", action="store_true", help="the control: classify the digits")
    p.add_argument("--knn-every", type=int, default=250)
    p.add_argument("--limit", type=int, default=None, help="use the first N train scans only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="recipe_search.json")
    return p.parse_args(argv)


def split_scans(labels, val_fraction=0.2):
    """A fixed stratified split of load_digits (seed 0): (train indices, val indices)."""
    order = np.random.default_rng(0).permutation(len(labels))
    val = np.concatenate(
        [
            order[labels[order] == c][: int(round(val_fraction * (labels == c).sum()))]
            for c in range(10)
        ]
    )
    return np.setdiff1d(order, val), np.sort(val)


def main(argv=None):
    a = parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(a.seed)
    from sklearn.datasets import load_digits

    digits = load_digits()
    scans, y = digits.images, digits.target
    tr_idx, val_idx = split_scans(y)
    if a.limit:
        tr_idx = tr_idx[: a.limit]
    masks = render_masks(scans, tr_idx, 1, a.renders)
    n_scans, n = len(tr_idx), len(masks)
    train_y = torch.from_numpy(np.tile(y[tr_idx], a.renders))
    pal_bg, pal_fg = random_colours(a.palette, torch.Generator().manual_seed(7))
    style = torch.randint(a.palette, (n,), generator=torch.Generator().manual_seed(8))
    if a.style_per_scan:
        style = style[:n_scans].repeat(a.renders)
    own_bg, own_fg = random_colours(n, torch.Generator().manual_seed(123))

    def eval_images(indices, seed):
        m = render_masks(scans, indices, seed, 1)
        g = torch.Generator().manual_seed(seed)
        if a.eval_colours == "palette":
            st = torch.randint(a.palette, (len(m),), generator=g)
            return normalise(colourise(m, pal_bg[st], pal_fg[st]), a.size)
        return normalise(colourise(m, *random_colours(len(m), g)), a.size)

    ev = {
        "bank": eval_images(tr_idx, 101),
        "bank_y": torch.from_numpy(y[tr_idx]),
        "val": eval_images(val_idx, 202),
        "val_y": torch.from_numpy(y[val_idx]),
    }
    model = MoCo("resnet18", 128, a.K, a.m, a.T, mlp=True, bn_splits=a.bn_splits)
    if a.supervised:
        model.encoder_q.fc = torch.nn.Linear(512, 10)
    record = {
        "args": vars(a),
        "raw_pixel_knn": knn_top1(ev["bank"], ev["bank_y"], ev["val"], ev["val_y"]),
        "random_knn": network_knn(model.encoder_q, ev),
        "random_knn_data_bn": network_knn(model.encoder_q, ev, data_bn=True),
        "log": [],
    }
    print(
        f"{n} train masks; kNN raw pixels {record['raw_pixel_knn']:.1f}, random init "
        f"{record['random_knn']:.1f} / data BN {record['random_knn_data_bn']:.1f}",
        flush=True,
    )
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=a.lr, momentum=0.9, weight_decay=a.wd)
    aug = DeviceAugment("v2", a.size, seed=0)
    if a.no_colour_aug:
        aug.recipe = dataclasses.replace(aug.recipe, jitter_p=0.0, gray_p=0.0, blur_p=0.0)
    warm = max(1, min(100, a.steps // 10))
    g = torch.Generator().manual_seed(a.seed + 1)
    sums, t0 = np.zeros(5), time.time()
    for step in range(1, a.steps + 1):
        progress = (step - warm) / max(1, a.steps - warm)
        lr = a.lr * (
            step / warm
            if step <= warm
            else (1.0 if a.constant_lr else 0.5 * (1 + math.cos(math.pi * progress)))
        )
        for group in opt.param_groups:
            group["lr"] = lr
        index = torch.randint(n, (a.batch_size,), generator=g)
        second = partner(index, n_scans, a.renders, g) if a.pair == "renders" else index
        views = []
        for rows in (index, second):
            if a.colours == "palette":
                images = colourise(masks[rows], pal_bg[style[rows]], pal_fg[style[rows]])
            elif a.colours == "own":
                images = colourise(masks[rows], own_bg[rows], own_fg[rows])
            else:
                images = colourise(masks[rows], *random_colours(len(rows), g))
            boxes = sample_boxes(len(rows), (a.scale, 1.0), g)
            flips = torch.rand(len(rows), generator=g) < a.flip
            crops = crop_affine(images, boxes, flips, a.size, g, a.rot, a.shear)
            aug.generator = g
            views.append(aug(crops))
        model.train()
        if a.supervised:
            out = model.encoder_q(views[0])
            loss = F.cross_entropy(out, train_y[index])
            stats = [100 * (out.argmax(1) == train_y[index]).float().mean().item(), 0, 0, 0]
        else:
            logits, labels = model(*views)
            loss = F.cross_entropy(logits, labels)
            cs = contrast_stats(logits, a.T).tolist()
            stats = [100 * cs[0], cs[1], cs[2], float(model.last_query_similarity)]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sums += [loss.item(), *stats]
        if step % 50 == 0 or step == a.steps:
            k = 50 if step % 50 == 0 else step % 50
            mean = dict(zip(("loss", "top1", "pos", "neg", "qq"), (sums / k).tolist()))
            sums[:] = 0
            elapsed = time.time() - t0
            print(
                f"step {step}/{a.steps} lr {lr:.4f} loss {mean['loss']:.3f} top1 "
                f"{mean['top1']:.1f} q.k+ {mean['pos']:.3f} q.k- {mean['neg']:.3f} "
                f"q.q' {mean['qq']:.3f} {step * a.batch_size / elapsed:.0f} img/s, "
                f"ETA {elapsed / step * (a.steps - step) / 60:.1f} min",
                flush=True,
            )
            record["log"].append({"step": step, **mean})
        if step % a.knn_every == 0 or step == a.steps:
            knn = network_knn(model.encoder_q, ev)
            print(f"step {step} kNN {knn:.1f}", flush=True)
            record["log"].append({"step": step, "knn": knn})
            atomic_write_bytes(a.out, json.dumps(record, indent=1).encode())
    return record


if __name__ == "__main__":
    main()
