"""One conversion: read a checkpoint, extract the ResNet, rename it, write Detectron2 weights."""

import os
from dataclasses import dataclass, field

from tabulate import tabulate

from convert.mapping import detectron2_resnet_keys, map_backbone
from convert.writer import check_output_path, sha256_of, write_detectron2_weights
from pretrain.weights.integrity import check_resnet
from pretrain.weights.reader import extract_backbone, load_checkpoint_file


@dataclass
class ConversionReport:
    input_path: str
    output_path: str
    source_format: (
        str  # a pretrain.weights.layouts name ("moco", "swav", "dino" ...) or "prefix:<P>"
    )
    target: str  # "c4", "fpn", "heuristic"
    arch: str  # e.g. "ResNet-50 (bottleneck blocks [3, 4, 6, 3])"
    depth: int
    sha256: str  # of the input file
    mapped: dict = field(default_factory=dict)  # key in the input file -> Detectron2 name
    dropped: list = field(default_factory=list)  # [(key in the input file, reason)]
    other_entries: list = field(default_factory=list)  # top-level entries that are not weights
    detectron2_config: str = ""  # MODEL.RESNETS keys the config needs for this ResNet

    @property
    def mapped_count(self):
        return len(self.mapped)

    def summary(self):
        """What was converted, and a table of everything left out grouped by reason."""
        by_reason = {}
        for name, reason in self.dropped:
            by_reason.setdefault(reason, []).append(name)
        rows = [
            (reason, len(names), ", ".join(names[:2]) + (" ..." if len(names) > 2 else ""))
            for reason, names in by_reason.items()
        ]
        lines = [
            f"{self.input_path} -> {self.output_path}",
            f"  source: {self.source_format}, {self.arch}, target: {self.target}",
            f"  mapped {self.mapped_count} tensors (e.g. "
            + ", ".join(f"{k} -> {v}" for k, v in list(self.mapped.items())[:2])
            + ")",
        ]
        if rows:
            lines.append(f"  left out {len(self.dropped)} tensors:")
            table = tabulate(rows, headers=["why", "count", "examples"], tablefmt="simple")
            lines += ["    " + line for line in table.splitlines()]
        if self.other_entries:
            lines.append(
                f"  also in the file, not weights (not converted): {', '.join(self.other_entries)}"
            )
        if self.detectron2_config:
            lines.append(f"  Detectron2 config for this file: {self.detectron2_config}")
        return "\n".join(lines)


def convert_checkpoint(
    input_path,
    output_path,
    *,
    target="c4",
    source="auto",
    prefix=None,
    momentum_encoder=False,
    student=False,
    force=False,
):
    """Convert a ResNet pretraining checkpoint into Detectron2 weights at ``output_path`` (.pkl).

    ``target``: "c4" (exact R50-C4 names, res5 in roi_heads), "fpn" (backbone.bottom_up.*),
    "dc5" (backbone.res2-res5: R50-DC5, dilated FCN), "heuristic" (bare stem./res2. names,
    Detectron2 matches them by suffix).
    ``source``: "auto" or a forced layout (see ``pretrain.weights.reader``).
    ``momentum_encoder`` / ``student``: the momentum copy / DINO's student instead.
    Raises (nothing written) on unknown layouts, unsafe or damaged files, incomplete,
    wrongly shaped or non-finite ResNets, already-Detectron2 weights, or an existing
    output without ``force``.
    """
    input_path, output_path = os.fspath(input_path), os.fspath(output_path)
    check_output_path(output_path, force)  # fail before reading a large file
    extracted = extract_backbone(
        load_checkpoint_file(input_path),
        source=source,
        prefix=prefix,
        momentum_encoder=momentum_encoder,
        student=student,
    )
    origin = extracted.origin
    check_resnet(extracted.backbone, _where(origin))
    mapped = map_backbone(extracted.backbone, target)
    digest = sha256_of(input_path)
    write_detectron2_weights(
        mapped.tensors,
        output_path,
        matching_heuristics=(target == "heuristic"),
        source={"file": os.path.basename(input_path), "sha256": digest, "format": extracted.format},
        force=force,
    )
    return ConversionReport(
        input_path=input_path,
        output_path=output_path,
        source_format=extracted.format,
        target=target,
        arch=str(mapped.arch),
        depth=mapped.arch.depth,
        sha256=digest,
        mapped={origin[n]: d2 for n, d2 in mapped.renames.items()},
        dropped=extracted.dropped + [(origin[n], why) for n, why in mapped.dropped],
        other_entries=extracted.other_entries,
        detectron2_config=detectron2_resnet_keys(mapped.arch),
    )


def _where(origin):
    """ "under 'module.encoder_q.' " from the file keys of the kept tensors, for messages."""
    for name, key in origin.items():
        if key.endswith(name) and key != name:
            return f"under {key[: -len(name)]!r} "
    return ""
