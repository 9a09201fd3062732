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

TARGETS = ("c4", "fpn", "dc5", "heuristic")

# (pattern on torchvision names, replacement in Detectron2 names). Anchored: a key
# that matches none of them is an error, never silently skipped.
_RULES = [
    (r"^conv1\.weight$", r"stem.conv1.weight"),
    (r"^bn1\.(weight|bias|running_mean|running_var)$", r"stem.conv1.norm.\1"),
    (r"^layer([1-4])\.(\d+)\.conv([1-3])\.weight$", r"res{stage}.\2.conv\3.weight"),
    (r"^layer([1-4])\.(\d+)\.bn([1-3])\.(weight|bias|running_mean|running_var)$",
     r"res{stage}.\2.conv\3.norm.\4"),
    (r"^layer([1-4])\.(\d+)\.downsample\.0\.weight$", r"res{stage}.\2.shortcut.weight"),
    (r"^layer([1-4])\.(\d+)\.downsample\.1\.(weight|bias|running_mean|running_var)$",
     r"res{stage}.\2.shortcut.norm.\3"),
]
_RULES = [(re.compile(p), r) for p, r in _RULES]

# What is dropped on purpose, and why (the reason is printed in the report).
BN_COUNTER_REASON = "BN step counter: Detectron2's BN/FrozenBN recreate it when loading"
HEAD_REASON = "classifier/projection head (replaced by the detection heads)"

RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


class MappingError(ValueError):
    """The weights are not a torchvision-style ResNet that Detectron2 can build."""


@dataclass(frozen=True)
class ResNetArch:
    depth: int
    block: str  # "basic" or "bottleneck"
    blocks_per_stage: tuple
    res2_out_channels: int
    bottleneck_channels: int  # res2 bottleneck width: 64 for R50, 128 for wide R50-2
    groups: int  # 1, or 32 for ResNeXt (Detectron2: NUM_GROUPS * WIDTH_PER_GROUP = bottleneck_channels)

    def __str__(self):
        return f"ResNet-{self.depth} ({self.block} blocks {list(self.blocks_per_stage)})"

    def detectron2_config(self):
        """The MODEL.RESNETS keys a Detectron2 config needs to build this ResNet."""
        keys = [("DEPTH", self.depth), ("RES2_OUT_CHANNELS", self.res2_out_channels)]
        if self.block == "bottleneck":  # basic blocks (R18/R34) have no bottleneck width
            keys += [("NUM_GROUPS", self.groups),
                     ("WIDTH_PER_GROUP", self.bottleneck_channels // self.groups)]
        return " ".join(f"MODEL.RESNETS.{k} {v}" for k, v in keys)


def torchvision_to_detectron2_name(name):
    """``layer3.5.bn2.running_var`` -> ``res4.5.conv2.norm.running_var``; None if not a ResNet key."""
    for pattern, replacement in _RULES:
        m = pattern.match(name)
        if m:
            stage = int(m.group(1)) + 1 if name.startswith("layer") else None
            return m.expand(replacement.replace("{stage}", str(stage)))
    return None


def resnet_arch(backbone):
    """Depth and widths of a torchvision-named ResNet state dict (keys without ``fc``)."""
    blocks = [set() for _ in range(4)]
    for name in backbone:
        m = re.match(r"^layer([1-4])\.(\d+)\.", name)
        if m:
            blocks[int(m.group(1)) - 1].add(int(m.group(2)))
    if "conv1.weight" not in backbone or not all(blocks):
        raise MappingError(
            "the weights do not contain a ResNet stem and four stages (conv1.weight, "
            "layer1..layer4 expected).\n  Fix: pick the sub-network holding the ResNet with "
            "--source/--prefix."
        )
    for i, b in enumerate(blocks):
        if b != set(range(len(b))):
            raise MappingError(f"layer{i + 1} has non-consecutive block indices {sorted(b)}.")
    counts = tuple(len(b) for b in blocks)
    block = "bottleneck" if "layer1.0.conv3.weight" in backbone else "basic"
    depth = RESNET_DEPTHS.get((block, counts))
    if depth is None:
        known = ", ".join(f"R{d}: {b} {list(c)}" for (b, c), d in RESNET_DEPTHS.items())
        raise MappingError(
            f"{block} blocks per stage {list(counts)} is not a ResNet depth Detectron2 builds "
            f"({known})."
        )
    res2_out = int(backbone[f"layer1.0.conv{3 if block == 'bottleneck' else 2}.weight"].shape[0])
    width = int(backbone["layer1.0.conv1.weight"].shape[0])
    conv2 = backbone["layer1.0.conv2.weight"].shape
    groups = int(conv2[0] // conv2[1]) if block == "bottleneck" else 1
    return ResNetArch(depth, block, counts, res2_out, width, groups)


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
