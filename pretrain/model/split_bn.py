"""SplitBatchNorm: shuffling BN's effect on a single device.

From the official MoCo CIFAR-10 demo. In train mode the batch is split into
``num_splits`` groups, each normalised with its own statistics, as if each group
ran on a different GPU; running statistics are the mean over groups. Eval mode is
plain BatchNorm. Group ``j`` is samples ``j, j+S, j+2S, ...`` (a free reshape for contiguous NCHW
input;
a copy for channels_last, which cannot be viewed that way).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    def __init__(self, num_features, num_splits, **kwargs):
        super().__init__(num_features, **kwargs)
        if num_splits < 1:
            raise ValueError(f"num_splits must be >= 1, got {num_splits}")
        self.num_splits = num_splits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(
                f"SplitBatchNorm: batch of {n} does not divide into {s} splits; "
                f"use a batch size that is a multiple of model.bn_splits"
            )
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        # [N, C] -> [N/S, S*C]: sample i lands in channel block i % S, so each block
        # is one group with its own statistics.
        out = F.batch_norm(
            x.reshape(n // s, s * c, h, w),
            mean,
            var,
            self.weight.repeat(s) if self.weight is not None else None,
            self.bias.repeat(s) if self.bias is not None else None,
            True,
            self.momentum,
            self.eps,
        ).reshape(n, c, h, w)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked.add_(1)
        return out

    def extra_repr(self):
        return super().extra_repr() + f", num_splits={self.num_splits}"
