"""torchvision ResNet names -> Detectron2 ResNet names, for each Detectron2 meta-architecture.

Detectron2 (``modeling/backbone/resnet.py``) names the stem ``stem.conv1`` with its
BN as ``stem.conv1.norm``, the stages ``res2..res5`` (torchvision ``layer1..4``),
puts each block's BN inside its conv (``conv2.norm``) and calls the projection
``shortcut``. Bottleneck (R50/101/152) and basic (R18/34) blocks differ only
in having ``conv3``; the rules below cover both.

Where the names live depends on the model: R50-C4 keeps res2-res4 in
``backbone.`` and res5 in the ROI head (``roi_heads.res5.``, see
``Res5ROIHeads``); FPN wraps the ResNet as ``backbone.bottom_up.``; models whose
backbone is the whole ResNet (R50-DC5, dilated FCN) keep res2-res5 in ``backbone.``.
The "heuristic" target leaves bare names for Detectron2's suffix matching.
"""

import re
from dataclasses import dataclass

from pretrain.weights.resnet_arch import MappingError, ResNetArch, resnet_arch  # noqa: F401  (re-exported)

TARGETS = ("c4", "fpn", "dc5", "heuristic")

# (pattern on torchvision names, replacement in Detectron2 names). Anchored: a key
# that matches none of them is an error, never silently skipped.
_RULES = [
    (r"^conv1\.weight$", r"stem.conv1.weight"),
    (r"^bn1\.(weight|bias|running_mean|running_var)$", r"stem.conv1.norm.\1"),
    (r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$", r"res{stage}.\2.conv\3.weight"),
    (
        r"^layer([1-4])\.(\d+)\.bn([1-3])\.(weight|bias|running_mean|running_var)$",
        r"res{stage}.\2.conv\3.norm.\4",
    ),
    (r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$", r"res{stage}.\2.shortcut.weight"),
    (
        r"^layer([1-4])\.(\d+)\.downsample\.1\.(weight|bias|running_mean|running_var)$",
        r"res{stage}.\2.shortcut.norm.\3",
    ),
]
_RULES = [(re.compile(p), r) for p, r in _RULES]

# What is dropped on purpose, and why (the reason is printed in the report).
BN_COUNTER_REASON = "BN step counter: Detectron2's BN/FrozenBN recreate it when loading"
HEAD_REASON = "classifier/projection head (replaced by the detection heads)"


def torchvision_to_detectron2_name(name):
    """``layer3.5.bn2.running_var`` -> ``res4.5.conv2.norm.running_var``; None if not a
    ResNet key.
    """
    for pattern, replacement in _RULES:
        m = pattern.match(name)
        if m:
            stage = int(m.group(1)) + 1 if name.startswith("layer") else None
            return m.expand(replacement.replace("{stage}", str(stage)))
    return None


def target_name(detectron2_name, target):
    """Where a backbone tensor lives in the model built for ``target``."""
    if target == "heuristic":
        return detectron2_name
    if target == "fpn":
        return "backbone.bottom_up." + detectron2_name
    if target == "dc5":
        return "backbone." + detectron2_name
    if target == "c4":
        if detectron2_name.startswith("res5."):
            return "roi_heads." + detectron2_name  # Res5ROIHeads owns res5
        return "backbone." + detectron2_name
    raise MappingError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}.")


@dataclass
class MappedBackbone:
    tensors: dict  # Detectron2 name (for the target) -> tensor
    renames: dict  # torchvision name -> Detectron2 name
    dropped: list  # [(torchvision name, reason)]: num_batches_tracked and fc only
    arch: ResNetArch


def map_backbone(backbone, target):
    """Rename a torchvision-named ResNet state dict for ``target``.

    Only ``num_batches_tracked`` and ``fc`` are left out (listed with the reason); any
    other key that is not a ResNet tensor raises: nothing is lost silently.
    """
    if target not in TARGETS:
        raise MappingError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}.")
    arch = resnet_arch(backbone)
    if target == "c4" and arch.block == "basic":
        raise MappingError(
            f"{arch} cannot be used with --target c4: Detectron2's Res5ROIHeads always builds "
            f"res5 from 3 bottleneck blocks (R50/R101/R152).\n"
            f"  Fix: use --target fpn (e.g. an R18/R34 FPN config with RESNETS.DEPTH {arch.depth} "
            f"and RES2_OUT_CHANNELS 64)."
        )
    tensors, renames, dropped, unknown = {}, {}, [], []
    for name, tensor in backbone.items():
        if name.endswith(".num_batches_tracked"):
            dropped.append((name, BN_COUNTER_REASON))
            continue
        if name.startswith("fc."):
            dropped.append((name, HEAD_REASON))
            continue
        d2 = torchvision_to_detectron2_name(name)
        if d2 is None:
            unknown.append(name)
            continue
        renames[name] = target_name(d2, target)
        tensors[renames[name]] = tensor
    if unknown:
        raise MappingError(
            f"{len(unknown)} tensor(s) are not part of a torchvision ResNet and have no Detectron2 "
            f"name: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}.\n"
            f"  Fix: this converter handles torchvision-style ResNets (conv1/bn1/layer1-4/"
            f"downsample); for other backbones write a mapping, or select the ResNet part "
            f"with --prefix."
        )
    return MappedBackbone(tensors, renames, dropped, arch)


def detectron2_resnet_keys(arch):
    """The ``MODEL.RESNETS`` keys a Detectron2 config needs to build ``arch``, as KEY VALUE text."""
    keys = [("DEPTH", arch.depth), ("RES2_OUT_CHANNELS", arch.res2_out_channels)]
    if arch.block == "bottleneck":  # basic blocks (R18/R34) have no bottleneck width
        keys += [
            ("NUM_GROUPS", arch.groups),
            ("WIDTH_PER_GROUP", arch.bottleneck_channels // arch.groups),
        ]
    return " ".join(f"MODEL.RESNETS.{k} {v}" for k, v in keys)
