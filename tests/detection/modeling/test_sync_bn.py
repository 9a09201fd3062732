"""naiveSyncBN (the MoCo configs' norm) really synchronises over gloo processes on CPU.

Two processes, different inputs: after one training-mode forward pass every BN layer of the
backbone and FPN has the same running statistics on both ranks, equal to the statistics of the
union of the inputs; plain BN on the same inputs does not (so the test can fail).
"""

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.engine import launch
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.modeling import build_backbone

from detection.config_lookup import load_config
from tests.detection.tiny_detection import write_tiny_c4_config


def _fpn_cfg(config_path, norm):
    return load_config(
        config_path,
        [
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.RESNETS.OUT_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.FPN.IN_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.FPN.OUT_CHANNELS",
            "16",
            "MODEL.RESNETS.NORM",
            norm,
            "MODEL.FPN.NORM",
            norm,
        ],
    )


def _bn_stats(model):
    return {
        name: torch.cat([m.running_mean, m.running_var])
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    }


def _worker(folder, config_path):
    rank = dist.get_rank()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(100 + rank)) * (1 + rank)
    out = {}
    for norm in ("naiveSyncBN", "BN"):
        torch.manual_seed(0)  # same initial weights on both ranks, as DDP would broadcast
        model = build_backbone(_fpn_cfg(config_path, norm)).train()
        model(x)
        out[norm] = _bn_stats(model)
        if norm == "naiveSyncBN":
            assert all(
                type(m) is NaiveSyncBatchNorm
                for m in model.modules()
                if isinstance(m, torch.nn.BatchNorm2d)
            )
            # Statistics of the first conv's output over both ranks' inputs together.
            xs = [torch.empty_like(x) for _ in range(dist.get_world_size())]
            dist.all_gather(xs, x)
            conv = model.bottom_up.stem.conv1
            y = F.conv2d(torch.cat(xs), conv.weight, None, conv.stride, conv.padding)
            out["union_stem"] = (y.mean(dim=[0, 2, 3]), y.var(dim=[0, 2, 3], unbiased=False))
            out["momentum"] = conv.norm.momentum
    torch.save(out, os.path.join(folder, f"rank{rank}.pt"))


def test_naive_sync_bn_statistics_are_shared_across_gloo_processes(tmp_path):
    # Written once here: two ranks writing the same file race (one reads it half-written).
    config_path = write_tiny_c4_config(tmp_path)
    launch(_worker, 2, dist_url="auto", args=(str(tmp_path), config_path))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    synced0, synced1 = r0["naiveSyncBN"], r1["naiveSyncBN"]
    assert len(synced0) > 20 and any(name.startswith("fpn_") for name in synced0)  # backbone + FPN
    for name in synced0:
        torch.testing.assert_close(synced0[name], synced1[name], rtol=1e-5, atol=1e-6)

    mean, var = r0["union_stem"]
    momentum = r0["momentum"]  # running = (1 - m) * initial (0 mean, 1 var) + m * batch statistic
    stem = synced0["bottom_up.stem.conv1.norm"]
    torch.testing.assert_close(stem[: len(mean)], momentum * mean, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        stem[len(mean) :], (1 - momentum) + momentum * var, rtol=1e-4, atol=1e-5
    )

    # Per-process BN on the same inputs disagrees: the check above is not vacuous.
    plain0, plain1 = r0["BN"], r1["BN"]
    assert not torch.allclose(
        plain0["bottom_up.stem.conv1.norm"], plain1["bottom_up.stem.conv1.norm"]
    )
