"""The encoder network: a plain torchvision ResNet.

Kept standard (ImageNet stem, torchvision parameter names) so that the query
encoder converts to Detectron2 without special cases.
"""

import copy
import functools

import torch.nn as nn
import torchvision

from pretrain.model.split_bn import SplitBatchNorm


def build_resnet(arch: str, bn_splits: int = 1) -> nn.Module:
    """A randomly initialised torchvision ResNet (``arch`` like "resnet18", "resnet50").

    ``bn_splits > 1`` swaps every BatchNorm2d for :class:`SplitBatchNorm` (same
    parameter names, so checkpoints are unchanged).
    """
    if not arch.startswith(("resnet", "resnext", "wide_resnet")):
        raise ValueError(
            f"arch {arch!r} is not a torchvision ResNet; use e.g. resnet18 / resnet50 "
            f"(the converter to Detectron2 expects ResNet parameter names)"
        )
    kwargs = {}
    if bn_splits > 1:
        kwargs["norm_layer"] = functools.partial(SplitBatchNorm, num_splits=bn_splits)
    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except ValueError as e:
        raise ValueError(
            f"unknown arch {arch!r}: {e}. Try resnet18, resnet34, resnet50, resnet101."
        ) from e


def feature_dim(model: nn.Module) -> int:
    """Width of the pooled features, i.e. what enters ``fc`` (a Linear or our head)."""
    fc = model.fc
    if isinstance(fc, nn.Linear):
        return fc.in_features
    for layer in fc.modules():
        if isinstance(layer, nn.Linear):
            return layer.in_features
    raise ValueError("cannot find a Linear layer in model.fc to read the feature width from")


def pooled_backbone(encoder: nn.Module) -> nn.Module:
    """A copy of ``encoder`` whose head is removed: images -> pooled features (for
    kNN/linear eval).
    """
    backbone = copy.deepcopy(encoder)
    backbone.fc = nn.Identity()
    return backbone
