"""Refuse files that cannot be right, before anything is written.

- ``check_zip_records``: torch's zip format stores a CRC-32 per record; a flipped bit or a cut
  copy fails here instead of becoming garbage weights (the legacy non-zip format has no CRC).
- ``check_resnet``: every tensor a torchvision ResNet of the detected depth and widths has
  (built on the meta device: shapes only, no memory) must be present with that shape, and every
  weight must be finite (NaN/Inf: a diverged run).
"""

import re
import struct
import zipfile
import zlib

import torch
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from pretrain.io import CorruptCheckpointError
from pretrain.weights.resnet_arch import RESNET_DEPTHS, MappingError, is_resnet_key, stage_blocks


class IntegrityError(ValueError):
    """The weights are incomplete, wrongly shaped or not finite; nothing was written."""


# ------------------------------------------------------------------ file
def check_zip_records(path):
    """Read every record of a torch zip file and compare it with its stored CRC-32."""
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.CRC == 0 and info.file_size > 0:
                    continue  # written with torch's CRC computation switched off: nothing to check
                with archive.open(info) as record:  # zipfile raises BadZipFile on a CRC mismatch
                    while record.read(1 << 22):
                        pass
    except (zipfile.BadZipFile, EOFError, ValueError, struct.error, zlib.error, OSError) as e:
        raise CorruptCheckpointError(
            f"{path!r} is damaged or truncated ({e}): not a readable checkpoint, nothing was "
            f"converted.\n  Fix: copy (or download) it again and compare its size and checksum "
            f"with the original."
        ) from e


# ------------------------------------------------------------------ tensors
def expected_arch(backbone):
    """(depth, block, blocks per stage, width, groups) of the ResNet the weights should be.

    An exact torchvision depth when the stages say so; otherwise the nearest one (a missing
    block or stage), so the error can name what is missing instead of "unknown depth".
    """
    blocks = stage_blocks(backbone)
    if not any(blocks) and "conv1.weight" not in backbone:
        raise MappingError(
            "the weights do not contain a ResNet stem and four stages (conv1.weight, "
            "layer1..layer4 expected).\n  Fix: pick the sub-network holding the ResNet with "
            "--source/--prefix."
        )
    counts = tuple(max(b) + 1 if b else 0 for b in blocks)
    block = (
        "bottleneck" if any(re.match(r"^layer\d\.\d+\.conv3\.", n) for n in backbone) else "basic"
    )
    same_block = [(c, d) for (b, c), d in RESNET_DEPTHS.items() if b == block]
    nearest, depth = min(same_block, key=lambda cd: sum(abs(x - y) for x, y in zip(cd[0], counts)))
    conv1, conv2 = backbone.get("layer1.0.conv1.weight"), backbone.get("layer1.0.conv2.weight")
    width = int(conv1.shape[0]) if block == "bottleneck" and conv1 is not None else 64
    groups = 1
    if block == "bottleneck" and conv2 is not None and conv2.ndim == 4 and conv2.shape[1]:
        groups = max(1, int(conv2.shape[0]) // int(conv2.shape[1]))
    return depth, block, nearest, width, groups


def expected_shapes(block, blocks_per_stage, width=64, groups=1):
    """{torchvision name: shape} of that ResNet, built on the meta device (no memory used)."""
    kind = Bottleneck if block == "bottleneck" else BasicBlock
    kwargs = {"groups": groups, "width_per_group": width // groups} if block == "bottleneck" else {}
    with torch.device("meta"):
        model = ResNet(kind, list(blocks_per_stage), **kwargs)
    return {
        k: tuple(v.shape)
        for k, v in model.state_dict().items()
        if not k.startswith("fc.") and not k.endswith("num_batches_tracked")
    }


def _grouped(names):
    """``bn1 (4), layer3.5 (18)``: names summarised by module."""
    counts = {}
    for n in names:
        parts = n.split(".")
        key = ".".join(parts[:2]) if parts[0].startswith("layer") else parts[0]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} ({c})" for k, c in counts.items())


def check_resnet(backbone, where=""):
    """Raise IntegrityError unless ``backbone`` (torchvision names) is a whole, finite ResNet.

    ``where`` names the part of the file (e.g. "under 'module.encoder_q.'") in the message.
    Returns the depth. ``fc.*``, BN counters and non-ResNet names are left to mapping.py.
    """
    depth, block, counts, width, groups = expected_arch(backbone)
    expected = expected_shapes(block, counts, width, groups)
    arch = f"ResNet-{depth}" + (f" (width {width}, groups {groups})" if width != 64 else "")
    missing = [n for n in expected if n not in backbone]
    wrong = [
        (n, tuple(backbone[n].shape), s)
        for n, s in expected.items()
        if n in backbone and tuple(backbone[n].shape) != s
    ]
    extra = [
        n
        for n in backbone
        if n not in expected
        and not n.startswith("fc.")
        and not n.endswith("num_batches_tracked")
        and is_resnet_key(n)
    ]
    problems = []
    if missing:
        problems.append(
            f"missing {len(missing)} tensors: {_grouped(missing)} (e.g. {', '.join(missing[:3])})"
        )
    if wrong:
        problems.append(
            "wrong shape: "
            + "; ".join(
                f"{n} is {list(got)}, {arch} has {list(want)}" for n, got, want in wrong[:5]
            )
            + (f" (+{len(wrong) - 5} more)" if len(wrong) > 5 else "")
        )
    if extra:
        problems.append(f"{len(extra)} tensors {arch} does not have: {_grouped(extra)}")
    if problems:
        raise IntegrityError(
            f"the ResNet {where}is not a complete {arch}, so nothing was written: "
            + "; ".join(problems)
            + ".\n  Fix: convert the complete checkpoint (a partial or "
            "edited file would load with these tensors skipped or random); a ResNet variant "
            "Detectron2 does not build (e.g. a CIFAR 3x3 stem) cannot be converted."
        )
    bad = [
        (n, int((~torch.isfinite(t)).sum()))
        for n, t in backbone.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all()
    ]
    if bad:
        raise IntegrityError(
            f"{len(bad)} tensors {where}hold NaN or Inf values (a diverged run?), so nothing was "
            f"written: "
            + ", ".join(f"{n} ({c} values)" for n, c in bad[:5])
            + (" ..." if len(bad) > 5 else "")
            + ".\n  Fix: convert a checkpoint from before the run diverged."
        )
    return depth
