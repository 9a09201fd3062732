"""Backbones from pretraining checkpoints, as torchvision ResNets (linear protocol, kNN).

A MoCo checkpoint holds both encoders (``module.encoder_q.*``, ``module.encoder_k.*``), the queue
and the optimizer; downstream we want the query encoder only, without its fc / MLP head, as the
reference ``main_lincls.py`` does. Every layout ``pretrain.weights.reader`` knows works here too.
"""

import torch.nn as nn
import torchvision

from pretrain.weights.reader import ConversionError, extract_backbone, load_checkpoint_file
from pretrain.weights.resnet_arch import MappingError, resnet_arch, torchvision_arch_name


class CheckpointFormatError(ConversionError):
    """The file is not a ResNet pretraining checkpoint of a layout we know."""


def backbone_state_dict(checkpoint, source="checkpoint"):
    """The query encoder's weights from a loaded checkpoint, in torchvision names, fc dropped."""
    try:
        extracted = extract_backbone(checkpoint)
    except ConversionError as e:
        raise CheckpointFormatError(
            f"{source} is not a ResNet pretraining checkpoint: {e}\n  Expected e.g. "
            f"'module.encoder_q.conv1.weight' (MoCo) or 'conv1.weight' (torchvision); Detectron2 "
            f".pkl files are a conversion output, not an input here."
        ) from None
    return {k: v for k, v in extracted.backbone.items() if not k.startswith("fc.")}


def infer_resnet_arch(state_dict):
    """'resnet18' ... 'resnet152', 'wide_resnet50_2', ... from the shapes of a ResNet state dict."""
    try:
        return torchvision_arch_name(resnet_arch(state_dict))
    except MappingError as e:
        raise CheckpointFormatError(
            f"{e}\n  Fix: pass the arch explicitly (e.g. --arch resnet50)."
        ) from None


def load_backbone_state_dict(path):
    """``(state_dict, arch)`` of the query encoder in ``path`` (loaded without running code)."""
    checkpoint = load_checkpoint_file(path)
    state = backbone_state_dict(checkpoint, source=repr(str(path)))
    arch = checkpoint.get("arch") if isinstance(checkpoint, dict) else None
    return state, arch if isinstance(arch, str) else infer_resnet_arch(state)


def load_backbone(path, arch=None, num_classes=1000):
    """``(torchvision ResNet with the checkpoint's weights, its backbone state dict)``.

    The fc (``num_classes`` outputs) keeps its fresh initialisation; every other parameter
    and buffer must come from the checkpoint, else a clear error lists what is missing.
    """
    state, found_arch = load_backbone_state_dict(path)
    arch = arch or found_arch
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise CheckpointFormatError(
            f"{str(path)!r} does not fit torchvision {arch}: missing {missing[:6]}, unexpected "
            f"{unexpected[:6]}. Pass the arch the checkpoint was trained with (--arch)."
        )
    return model, state


def pooled_features(model):
    """Make ``model`` output pooled features (its fc replaced by Identity); returns the old fc."""
    fc = model.fc
    model.fc = nn.Identity()
    return fc
