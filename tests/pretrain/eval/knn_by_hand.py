"""The weighted kNN vote written out plainly, query by query: what ``pretrain.eval.knn`` must agree
with.
"""

import copy
import math

import torch
import torch.nn.functional as F

from pretrain.data import build_labeled_loader


@torch.no_grad()
def _features(model, path, image_size):
    loader = build_labeled_loader(path, image_size=image_size, batch_size=1000, train=False)
    feats, labels = [], []
    for images, target in loader:
        feats.append(model(images))
        labels += target.tolist()
    return F.normalize(torch.cat(feats).flatten(1), dim=1), labels


def knn_top1_by_hand(model, train_path, val_path, *, image_size, k, t=0.1):
    """Top-1 % on ``val_path`` of the vote of the ``k`` most similar ``train_path`` features, each
    weighted by exp(cosine / t); ``model``'s fc is bypassed on a copy, in eval mode."""
    model = copy.deepcopy(model).eval()
    model.fc = torch.nn.Identity()
    bank, bank_labels = _features(model, train_path, image_size)
    queries, labels = _features(model, val_path, image_size)
    right = 0
    for query, label in zip(queries, labels):
        neighbours = sorted(
            ((float(query @ b), lab) for b, lab in zip(bank, bank_labels)), reverse=True
        )[:k]
        votes = {}
        for sim, lab in neighbours:
            votes[lab] = votes.get(lab, 0.0) + math.exp(sim / t)
        right += max(votes, key=votes.get) == label
    return 100.0 * right / len(labels)
