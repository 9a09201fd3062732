"""Backbones from pretraining checkpoints: ours, the official MoCo ones, or torchvision's.

A MoCo checkpoint holds both encoders (``module.encoder_q.*``, ``module.encoder_k.*``),
the queue and the optimizer. Downstream we want the query encoder only, as a plain
torchvision ResNet (names ``conv1.weight``, ``layer1.0...``) without its fc / MLP head,
exactly as the reference ``main_lincls.py`` and ``convert-pretrain-to-detectron2.py`` do.
"""
import re

import torch.nn as nn
import torchvision

from .io import safe_torch_load

# Known prefixes in front of the encoder's own names, outermost first.
_WRAPPERS = ("module.",)
_ENCODER_PREFIXES = ("encoder_q.", "base_encoder.", "backbone.", "encoder.")
# (blocks per stage, bottleneck) -> torchvision arch
_RESNETS = {
    ((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
    ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
    ((3, 8, 36, 3), True): "resnet152",
}


class CheckpointFormatError(ValueError):
    """The file is not a MoCo or torchvision ResNet checkpoint."""


def _strip(name, prefix):
    return name[len(prefix):] if name.startswith(prefix) else name


def backbone_state_dict(checkpoint, source="checkpoint"):
    """The query encoder's weights from a loaded checkpoint, in torchvision names, fc dropped."""
    state = checkpoint
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise CheckpointFormatError(f"{source} holds no state dict (got {type(state).__name__})")
    for wrapper in _WRAPPERS:
        state = {_strip(k, wrapper): v for k, v in state.items()}
    for prefix in _ENCODER_PREFIXES:
        if any(k.startswith(prefix) for k in state):
            # Only the query encoder: encoder_k, the queue and heads are pretraining-only.
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            break
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    if "conv1.weight" not in state or not any(k.startswith("layer1.") for k in state):
        sample = sorted(state)[:5]
        raise CheckpointFormatError(
            f"{source} is not a MoCo or torchvision ResNet checkpoint: its keys look like {sample}; "
            f"expected 'module.encoder_q.conv1.weight' (MoCo) or 'conv1.weight' (torchvision). "
            f"Detectron2 .pkl files are a conversion output, not an input here.")
    return state


def infer_resnet_arch(state_dict):
    """'resnet18' / '34' / '50' / '101' / '152' from the block counts of a ResNet state dict."""
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state_dict for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        blocks.append(len(ids))
    bottleneck = "layer1.0.conv3.weight" in state_dict
    try:
        return _RESNETS[(tuple(blocks), bottleneck)]
    except KeyError:
        raise CheckpointFormatError(
            f"cannot tell the ResNet depth from blocks {blocks} (bottleneck={bottleneck}); "
            f"pass the arch explicitly (e.g. --arch resnet50)") from None


def load_backbone_state_dict(path):
    """``(state_dict, arch)`` of the query encoder in ``path`` (loaded with weights_only=True)."""
    checkpoint = safe_torch_load(path)
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
            f"{unexpected[:6]}. Pass the arch the checkpoint was trained with (--arch).")
    return model, state


def pooled_features(model):
    """Make ``model`` output pooled features (its fc replaced by Identity); returns the old fc."""
    fc = model.fc
    model.fc = nn.Identity()
    return fc
