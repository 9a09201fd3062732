"""MoCo: Momentum Contrast for unsupervised visual representation learning.

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual
Representation Learning", CVPR 2020 (arXiv 1911.05722), and Chen, Fan, Girshick,
He, "Improved Baselines with Momentum Contrastive Learning" (MoCo v2, arXiv
2003.04297). ``forward`` follows the paper's Algorithm 1 line by line.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain import distributed as du
from pretrain.model.backbone import build_resnet, feature_dim
from pretrain.model.momentum import momentum_update
from pretrain.model.queue import enqueue, random_queue
from pretrain.model.shuffle_bn import (
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    batch_unshuffle_single,
)

SHUFFLE_MODES = ("auto", "ddp", "single", "off")


def build_encoder(arch: str, dim: int, mlp: bool, bn_splits: int = 1) -> nn.Module:
    """ResNet whose ``fc`` is the projection head: v1 Linear(C, dim); v2 MLP C -> C -> dim."""
    net = build_resnet(arch, bn_splits=bn_splits)
    c = feature_dim(net)
    if mlp:
        net.fc = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, dim))
    else:
        net.fc = nn.Linear(c, dim)
    return net


def info_nce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """InfoNCE = cross-entropy over 1 + K classes, the positive being class 0."""
    return F.cross_entropy(logits, labels)


def positive_top1(logits: torch.Tensor) -> torch.Tensor:
    """Fraction of queries whose positive key beats every negative (a device tensor, no sync)."""
    return (logits.argmax(dim=1) == 0).float().mean()


@torch.no_grad()
def contrast_stats(logits: torch.Tensor, T: float) -> torch.Tensor:
    """[positive top-1, mean cosine q.k+, mean cosine q.k-] of one step, as one device tensor (no
    sync).

    The two similarities tell a collapsing representation (both near 1) from a learning one
    (q.k+ well above q.k-), which the loss alone does not: the loss also rises while the queue
    fills with real keys early in training.
    """
    cos = logits.float() * T
    return torch.stack([positive_top1(logits), cos[:, 0].mean(), cos[:, 1:].mean()])


@torch.no_grad()
def query_similarity(q: torch.Tensor) -> torch.Tensor:
    """Mean cosine between the queries of different images in a batch (a device tensor, no sync).

    The collapse check that q.k+ and q.k- cannot make: they compare the query encoder with the
    *key* encoder, and a query encoder that maps every image to one vector still separates them
    while it runs ahead of its momentum average (the newest keys, the positives, are then the
    most similar to that vector). Measured with a GroupNorm ResNet-18 on two-render pairs of the
    demo digits: q.k+ 0.18 vs q.k- 0.11, positive top-1 33 %, while this was 1.000 (README,
    Status). Near 1: collapsed; a learning encoder keeps it well below.
    """
    q = q.detach().float()
    n = q.shape[0]
    if n < 2:
        return q.new_zeros(())
    total = q.sum(0)
    # sum over i != j of q_i . q_j = |sum q|^2 - sum |q_i|^2, without the N x N matrix
    return (total.dot(total) - q.pow(2).sum()) / (n * (n - 1))


class MoCo(nn.Module):
    """Query encoder f_q, momentum key encoder f_k and a queue of K negative keys.

    State dict: ``encoder_q.*``, ``encoder_k.*``, ``queue`` [dim, K], ``queue_ptr`` [1];
    checkpoints prefix them with ``module.`` like the official code.
    """

    def __init__(
        self,
        arch="resnet50",
        dim=128,
        K=65536,
        m=0.999,
        T=0.07,
        mlp=False,
        bn_splits=1,
        shuffle="auto",
    ):
        super().__init__()
        if shuffle not in SHUFFLE_MODES:
            raise ValueError(f"shuffle must be one of {SHUFFLE_MODES}, got {shuffle!r}")
        if not 0.0 <= m < 1.0:
            raise ValueError(f"momentum m must be in [0, 1), got {m}")
        self.arch, self.K, self.m, self.T = arch, K, m, T
        self.bn_splits, self.shuffle = bn_splits, shuffle

        self.encoder_q = build_encoder(arch, dim, mlp, bn_splits)
        self.encoder_k = build_encoder(arch, dim, mlp, bn_splits)
        self.encoder_k.load_state_dict(self.encoder_q.state_dict())  # both start equal
        for p in self.encoder_k.parameters():
            p.requires_grad = False  # updated by momentum, never by gradient

        self.register_buffer("queue", random_queue(dim, K))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        # Set by wrap_query_encoder for DDP; kept out of the module tree so the
        # state dict keeps the official names.
        object.__setattr__(self, "_query_forward", None)
        self.shuffle_generator = None  # see set_shuffle_generator
        self.last_query_similarity = None  # query_similarity of the last forward's batch

    def wrap_query_encoder(self, wrapper) -> None:
        """Run f_q through ``wrapper`` (e.g. DistributedDataParallel(self.encoder_q)).

        DDP then syncs the query encoder's gradients only; key encoder and queue stay outside.
        """
        object.__setattr__(self, "_query_forward", wrapper)

    def set_shuffle_generator(self, generator) -> None:
        """Draw BN-shuffle permutations from ``generator`` (on the inputs' device) instead of the
        global RNG, so that a resumed run draws the same ones: data loaders also consume the
        global RNG, once per epoch *and* once on resume."""
        self.shuffle_generator = generator

    def shuffle_mode(self) -> str:
        if self.shuffle != "auto":
            return self.shuffle
        if du.world_size() > 1:
            return "ddp"
        return "single" if self.bn_splits > 1 else "off"

    @torch.no_grad()
    def encode_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """k = f_k(x_k), L2-normalised, computed on a shuffled batch and un-shuffled."""
        mode = self.shuffle_mode()
        if mode == "ddp":
            im_k, undo = batch_shuffle_ddp(im_k, self.shuffle_generator)
            return batch_unshuffle_ddp(F.normalize(self.encoder_k(im_k), dim=1), undo)
        if mode == "single":
            im_k, undo = batch_shuffle_single(im_k, self.shuffle_generator)
            return batch_unshuffle_single(F.normalize(self.encoder_k(im_k), dim=1), undo)
        return F.normalize(self.encoder_k(im_k), dim=1)

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor):
        """-> (logits [N, 1+K] already divided by T, labels [N] of zeros)."""
        f_q = self._query_forward or self.encoder_q
        q = F.normalize(f_q(im_q), dim=1)  # queries: N x C
        self.last_query_similarity = query_similarity(q)

        with torch.no_grad():
            momentum_update(self.encoder_k, self.encoder_q, self.m)  # before the keys
            k = self.encode_keys(im_k)  # keys: N x C, no gradient

        # Similarities in fp32 even under autocast: with T = 0.07 bf16 logits are too coarse.
        with torch.autocast(device_type=q.device.type, enabled=False):
            q, k = q.float(), k.float()
            l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)  # N x 1
            l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())  # N x K
            logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(
            logits.shape[0], dtype=torch.long, device=logits.device
        )  # positives at 0

        enqueue(self.queue, self.queue_ptr, du.all_gather_cat(k))  # all ranks' keys, in rank order
        return logits, labels
