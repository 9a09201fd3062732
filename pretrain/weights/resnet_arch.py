"""Which ResNet a torchvision-named state dict is: depth, block type, widths, groups.

The one table of ResNet depths, shared by the evaluations (which build the torchvision model)
and the converter (which prints the Detectron2 keys the file needs).
"""

import re
from dataclasses import dataclass

# A tensor of a torchvision ResNet's stem or stages (not its fc, not BN step counters).
_RESNET_KEY = re.compile(
    r"^(conv1\.weight|bn1\.(weight|bias|running_mean|running_var)"
    r"|layer[1-4]\.\d+\.(conv[1-3]\.weight|bn[1-3]\.(weight|bias|running_mean|running_var)"
    r"|downsample\.0\.weight|downsample\.1\.(weight|bias|running_mean|running_var)))$"
)


def is_resnet_key(name):
    return bool(_RESNET_KEY.match(name))


class MappingError(ValueError):
    """The weights are not a torchvision-style ResNet of a depth Detectron2 can build."""


RESNET_DEPTHS = {
    ("basic", (2, 2, 2, 2)): 18,
    ("basic", (3, 4, 6, 3)): 34,
    ("bottleneck", (3, 4, 6, 3)): 50,
    ("bottleneck", (3, 4, 23, 3)): 101,
    ("bottleneck", (3, 8, 36, 3)): 152,
}


@dataclass(frozen=True)
class ResNetArch:
    depth: int
    block: str  # "basic" or "bottleneck"
    blocks_per_stage: tuple
    res2_out_channels: int
    bottleneck_channels: int  # res2 bottleneck width: 64 for R50, 128 for wide R50-2
    groups: (
        int  # 1, or 32 for ResNeXt (Detectron2: NUM_GROUPS * WIDTH_PER_GROUP = bottleneck_channels)
    )

    def __str__(self):
        return f"ResNet-{self.depth} ({self.block} blocks {list(self.blocks_per_stage)})"


def stage_blocks(backbone):
    """Block indices per stage (four sets), from the ``layerN.M.`` names of a state dict."""
    blocks = [set() for _ in range(4)]
    for name in backbone:
        m = re.match(r"^layer([1-4])\.(\d+)\.", name)
        if m:
            blocks[int(m.group(1)) - 1].add(int(m.group(2)))
    return blocks


def resnet_arch(backbone):
    """Depth and widths of a torchvision-named ResNet state dict (keys without ``fc``)."""
    blocks = stage_blocks(backbone)
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


def torchvision_arch_name(arch):
    """The torchvision model name of ``arch`` (``resnet50``, ``wide_resnet50_2``,
    ``resnext50_32x4d``).
    """
    base_width = 64 if arch.block == "basic" else 64 * (arch.res2_out_channels // 256)
    if arch.groups > 1:
        return f"resnext{arch.depth}_{arch.groups}x{arch.bottleneck_channels // arch.groups}d"
    if arch.block == "bottleneck" and arch.bottleneck_channels == 2 * base_width:
        return f"wide_resnet{arch.depth}_2"
    return f"resnet{arch.depth}"
