"""The official MoCo code the benchmark compares against, kept as written there on purpose.

``ReferenceMoCo`` is ``moco/builder.py`` on one device (per-parameter momentum loop, a host read of
``queue_ptr``); ``reference_main_moco_transform`` is ``main_moco.py``'s two-crop transform with
``moco/loader.py``'s PIL GaussianBlur. Our implementation is ``pretrain.model.moco``.
"""

import random

import torch
import torch.nn as nn
import torch.nn.functional as F

from pretrain.data.augment import build_pretrain_transform


class MainMocoGaussianBlur:
    """``moco/loader.py``'s GaussianBlur: PIL's blur with sigma ~ U[0.1, 2] (Python ``random``)."""

    def __init__(self, sigma=(0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, x):
        from PIL import ImageFilter

        return x.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def reference_main_moco_transform(aug="v2", crop_size=224):
    """The two-crop transform exactly as the official ``main_moco.py`` builds it (the baseline).

    Kept here, apart from ``pretrain.data.augment`` (which now follows it, PIL blur included), so
    the
    baseline of the comparison stays the official code even if the project's path changes.
    """
    from torchvision import transforms as T

    from pretrain.data.augment import TwoCropsTransform, normalize

    if aug == "v1":
        return build_pretrain_transform("v1", crop_size)
    return TwoCropsTransform(
        T.Compose(
            [
                T.RandomResizedCrop(crop_size, scale=(0.2, 1.0)),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.RandomApply([MainMocoGaussianBlur([0.1, 2.0])], p=0.5),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                normalize(),
            ]
        )
    )


class ReferenceMoCo(nn.Module):
    """The official ``moco/builder.py`` on one device (no DDP shuffle): the step's baseline.

    Kept as written there on purpose: per-parameter momentum loop, ``int(self.queue_ptr)``.
    """

    def __init__(self, arch="resnet50", dim=128, K=65536, m=0.999, T=0.07, mlp=False):
        super().__init__()
        from pretrain.model.moco import build_encoder

        self.K, self.m, self.T = K, m, T
        self.encoder_q = build_encoder(arch, dim, mlp)
        self.encoder_k = build_encoder(arch, dim, mlp)
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data.copy_(param_q.data)
            param_k.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update_key_encoder(self):
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.data = param_k.data * self.m + param_q.data * (1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys):
        batch_size = keys.shape[0]
        ptr = int(self.queue_ptr)
        assert self.K % batch_size == 0
        self.queue[:, ptr : ptr + batch_size] = keys.T
        self.queue_ptr[0] = (ptr + batch_size) % self.K

    def forward(self, im_q, im_k):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            self._momentum_update_key_encoder()
            k = F.normalize(self.encoder_k(im_k), dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self._dequeue_and_enqueue(k)
        return logits, labels
