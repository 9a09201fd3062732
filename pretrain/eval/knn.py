"""Weighted kNN monitor on frozen features (Wu et al. 2018 InstDisc; MoCo's CIFAR demo).

Every validation image votes with its k nearest training features (cosine similarity),
each neighbour weighted by exp(sim / t). Cheap enough to run during pretraining and
correlates with the linear protocol.
"""

import copy

import torch
import torch.nn.functional as F

from pretrain.data import build_labeled_loader
from pretrain.eval.classify import check_same_classes, default_device
from pretrain.weights.backbone import pooled_features


@torch.no_grad()
def extract_features(model, loader, device):
    """``(features [N, D] L2-normalised, labels [N])`` of ``model`` (eval mode) over ``loader``."""
    device = torch.device(device)
    model.eval()
    feats, labels = [], []
    for images, target in loader:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            out = model(images.to(device, non_blocking=True))
        feats.append(F.normalize(out.float().flatten(1), dim=1).cpu())
        labels.append(target.cpu())
    return torch.cat(feats), torch.cat(labels)


def knn_scores(feats, bank, bank_labels, k=200, t=0.1, num_classes=None, chunk=1024):
    """Class scores [B, C]: sum over the k most similar bank rows of exp(sim / t) per class.

    ``feats`` [B, D] and ``bank`` [N, D] are L2-normalised; ``bank_labels`` [N].
    """
    num_classes = num_classes or int(bank_labels.max()) + 1
    k = min(k, bank.shape[0])
    scores = []
    for start in range(0, feats.shape[0], chunk):  # bounded memory on large val sets
        sim = feats[start : start + chunk] @ bank.T
        sim_weight, sim_index = sim.topk(k, dim=1)
        sim_labels = bank_labels[sim_index]
        weight = (sim_weight / t).exp()
        out = torch.zeros(sim.shape[0], num_classes, dtype=weight.dtype, device=weight.device)
        scores.append(out.scatter_add_(1, sim_labels, weight))
    return torch.cat(scores)


def knn_predict(feats, bank, bank_labels, k=200, t=0.1, num_classes=None):
    """Top-1 predicted labels [B] of the weighted kNN vote (see :func:`knn_scores`)."""
    return knn_scores(feats, bank, bank_labels, k=k, t=t, num_classes=num_classes).argmax(dim=1)


@torch.no_grad()
def with_precise_bn(model, loader, device):
    """A copy of ``model`` whose BatchNorm statistics are the true averages over ``loader``'s
    images.

    For a network at random init, whose running statistics are placeholders (mean 0, variance 1,
    never estimated from data) while a trained network's come from its training images: with
    both estimated from data, a kNN comparison measures what the weights learned. fvcore's
    precise BN (as Detectron2's PreciseBN hook); split BN counts as one group here.
    """
    from fvcore.nn.precise_bn import get_bn_modules, update_bn_stats

    model = copy.deepcopy(model).to(device).train()
    for m in model.modules():
        if hasattr(m, "num_splits"):
            m.num_splits = 1
    if not get_bn_modules(model):
        return model.eval()
    images = (x.to(device, non_blocking=True) for x, _ in loader)
    with torch.autocast(device.type, enabled=device.type == "cuda"):
        update_bn_stats(model, images, num_iters=len(loader))
    return model.eval()


def knn_evaluate(
    backbone,
    train_path,
    val_path,
    *,
    image_size,
    k=200,
    t=0.1,
    batch_size=256,
    num_workers=0,
    device=None,
    precise_bn=False,
):
    """Top-1 % of the kNN classifier: bank = ``train_path`` features, queries = ``val_path``.

    ``backbone``: a torchvision-style ResNet (its ``fc`` is bypassed for the duration, then
    restored, as is its train/eval mode). Both sets use the evaluation transform.
    ``precise_bn``: evaluate a copy whose BatchNorm statistics are re-estimated on the
    ``train_path`` images first (:func:`with_precise_bn`); ``backbone`` itself is unchanged.
    """
    device = default_device(device)
    was_training = backbone.training
    fc = pooled_features(backbone) if hasattr(backbone, "fc") else None
    try:
        loaders = [
            build_labeled_loader(
                p,
                image_size=image_size,
                batch_size=batch_size,
                train=False,
                num_workers=num_workers,
            )
            for p in (train_path, val_path)
        ]
        check_same_classes(loaders[0].dataset.classes, loaders[1].dataset.classes)
        net = with_precise_bn(backbone, loaders[0], device) if precise_bn else backbone
        bank, bank_labels = extract_features(net, loaders[0], device)
        feats, labels = extract_features(net, loaders[1], device)
    finally:
        if fc is not None:
            backbone.fc = fc
        backbone.train(was_training)
    pred = knn_predict(
        feats, bank, bank_labels, k=k, t=t, num_classes=len(loaders[0].dataset.classes)
    )
    return 100.0 * float((pred == labels).float().mean())
