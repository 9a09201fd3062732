"""Prove converted weights work: they load into the Detectron2 model, and compute the same features.

``verify_converted`` builds the model a config describes, loads the file with
Detectron2's own ``DetectionCheckpointer`` (what training will do) and fails unless
every backbone parameter and buffer was loaded; only new detection layers (RPN,
box/mask heads, FPN convs, the extra res5 norm) may be missing.

``compare_features`` runs a torchvision ResNet and the Detectron2 model on the
same RGB image (each with its own preprocessing) and fails unless res4/res5
equal torchvision's layer3/layer4: the renaming, the stride placement
(``STRIDE_IN_1X1``) and the pixel format/mean/std are all right.
"""

import contextlib
import os
import re
from dataclasses import dataclass, field

import numpy as np
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode
from detectron2.modeling import build_model
from detectron2.modeling.backbone.resnet import CNNBlockBase, ResNet
from tabulate import tabulate

import detection  # noqa: F401  (registers Res5ROIHeadsExtraNorm and our other parts)
from detection.config_lookup import load_config
from detection.modeling.dc5_neck import NEW_CHILDREN
from detection.pixel_styles import TORCHVISION_PIXEL_MEAN, TORCHVISION_PIXEL_STD
from pretrain.weights.reader import extract_backbone, load_checkpoint_file
from pretrain.weights.resnet_arch import RESNET_DEPTHS, resnet_arch
from pretrain.weights.safe_pickle import safe_pickle_load


class VerifyError(ValueError):
    """The converted weights do not fit the model, or compute different features."""


# ------------------------------------------------------------------ configs
def load_detection_config(config, overrides=()):
    """A CfgNode from a CfgNode or our config name/path
    (``detection.config_lookup.load_config``).
    """
    if isinstance(config, CfgNode):
        cfg = config.clone()
        cfg.merge_from_list(list(overrides))
    else:
        cfg = load_config(config, overrides)
    if not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    return cfg


def config_problems(cfg):
    """Settings that would make torchvision-style weights compute wrong features.

    Returns (errors, warnings). Loading succeeds either way (shapes match), so
    without this check a wrong config silently wastes a fine-tuning run.
    """
    errors, warnings = [], []
    r = cfg.MODEL.RESNETS
    if r.STRIDE_IN_1X1:
        errors.append(
            "MODEL.RESNETS.STRIDE_IN_1X1 is True (MSRA/Caffe2 layout) but torchvision-style "
            "ResNets stride in the 3x3 conv: set MODEL.RESNETS.STRIDE_IN_1X1 False."
        )
    if cfg.INPUT.FORMAT != "RGB":
        warnings.append(f"INPUT.FORMAT is {cfg.INPUT.FORMAT}; MoCo/torchvision weights expect RGB.")
    if not np.allclose(cfg.MODEL.PIXEL_MEAN, TORCHVISION_PIXEL_MEAN) or not np.allclose(
        cfg.MODEL.PIXEL_STD, TORCHVISION_PIXEL_STD
    ):
        warnings.append(
            f"MODEL.PIXEL_MEAN/STD are {list(cfg.MODEL.PIXEL_MEAN)}/{list(cfg.MODEL.PIXEL_STD)}; "
            f"MoCo/torchvision weights expect {TORCHVISION_PIXEL_MEAN}/{TORCHVISION_PIXEL_STD}."
        )
    return errors, warnings


def target_for_config(cfg):
    """The --target whose names a config's model uses: "fpn", "c4" or "dc5"."""
    if "fpn" in cfg.MODEL.BACKBONE.NAME.lower():
        return "fpn"
    if (
        "Res5ROIHeads" in cfg.MODEL.ROI_HEADS.NAME
        and cfg.MODEL.META_ARCHITECTURE == "GeneralizedRCNN"
    ):
        return "c4"
    return "dc5"


def check_target_fits(target, cfg):
    """Fail before converting when ``target``'s names cannot load into ``cfg``'s model."""
    expected = target_for_config(cfg)
    if target not in ("heuristic", expected):
        raise VerifyError(
            f"--target {target} does not fit the --verify config, whose model "
            f"({cfg.MODEL.BACKBONE.NAME}, {cfg.MODEL.ROI_HEADS.NAME}) needs --target {expected}.\n"
            f"  Fix: convert with --target {expected} (or --target heuristic)."
        )


# ------------------------------------------------------------------ loading check
def backbone_prefixes(model):
    """Where the pretrained ResNet lives in a Detectron2 model.

    The stem and stages of every ``ResNet`` module (``backbone.`` in C4 and DC5,
    ``backbone.bottom_up.`` in FPN; not the DC5 backbone's new ``neck``) and the residual
    blocks of a C4 ROI head's ``res5`` (not its extra norm, which is new).
    """
    prefixes = [
        f"{name}.{child}."
        for name, m in model.named_modules()
        if isinstance(m, ResNet)
        for child, _ in m.named_children()
        if child not in NEW_CHILDREN
    ]
    res5 = getattr(getattr(model, "roi_heads", None), "res5", None)
    if res5 is not None:
        prefixes += [
            f"roi_heads.res5.{n}." for n, m in res5.named_children() if isinstance(m, CNNBlockBase)
        ]
    return prefixes


class _RecordingCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer that keeps the incompatible-keys result instead of only logging it."""

    incompatible = None

    def _log_incompatible_keys(self, incompatible):
        self.incompatible = incompatible
        super()._log_incompatible_keys(incompatible)


def _group(name):
    parts = name.split(".")
    depth = 3 if parts[:2] == ["backbone", "bottom_up"] else 2
    return ".".join(parts[:depth])


@dataclass
class VerifyReport:
    weights_path: str
    model_keys: int
    loaded: list = field(default_factory=list)
    missing_backbone: list = field(default_factory=list)  # must be empty
    missing_new: list = field(default_factory=list)  # new detection layers: fine
    unexpected: list = field(default_factory=list)  # in the file, not in the model
    incorrect_shapes: list = field(default_factory=list)  # (name, file shape, model shape)
    config_errors: list = field(default_factory=list)
    config_warnings: list = field(default_factory=list)

    @property
    def ok(self):
        return not (
            self.missing_backbone or self.unexpected or self.incorrect_shapes or self.config_errors
        )

    def table(self):
        rows = {}
        for status, names in (
            ("loaded", self.loaded),
            ("MISSING (backbone)", self.missing_backbone),
            ("new layer (not in file)", self.missing_new),
            ("UNEXPECTED (not in model)", self.unexpected),
            ("WRONG SHAPE", [n for n, *_ in self.incorrect_shapes]),
        ):
            for n in names:
                rows.setdefault((_group(n), status), 0)
                rows[(_group(n), status)] += 1
        body = tabulate(
            [(g, s, c) for (g, s), c in sorted(rows.items())],
            headers=["module", "status", "tensors"],
            tablefmt="simple",
        )
        notes = [f"config error: {e}" for e in self.config_errors]
        notes += [f"config warning: {w}" for w in self.config_warnings]
        verdict = "OK" if self.ok else "FAILED"
        head = (
            f"{verdict}: {len(self.loaded)} tensors loaded from {self.weights_path}, "
            f"{len(self.missing_backbone)} backbone tensors missing, "
            f"{len(self.missing_new)} new-layer tensors initialised fresh"
        )
        return "\n".join([head, body] + notes)


def _check_file_is_safe(weights_path):
    # DetectionCheckpointer unpickles .pkl files with plain pickle: refuse code first.
    if weights_path.endswith(".pkl"):
        safe_pickle_load(weights_path)
    else:
        load_checkpoint_file(weights_path)


def load_into_model(weights_path, cfg):
    """Build ``cfg``'s model and load ``weights_path`` as training would: (model, VerifyReport)."""
    weights_path = os.fspath(weights_path)
    _check_file_is_safe(weights_path)
    model = build_model(cfg)
    checkpointer = _RecordingCheckpointer(model)
    checkpointer.load(weights_path)
    inc = checkpointer.incompatible
    prefixes = backbone_prefixes(model)
    state = model.state_dict()
    missing = set(inc.missing_keys)
    wrong = {name for name, *_ in inc.incorrect_shapes}
    report = VerifyReport(weights_path=weights_path, model_keys=len(state))
    for name in state:
        if name in ("pixel_mean", "pixel_std") or name.endswith("num_batches_tracked"):
            # pixel stats come from the config; BN counters are dropped on purpose.
            continue
        if name in missing or name in wrong:
            is_backbone = name.startswith(tuple(prefixes))
            if name in missing:
                (report.missing_backbone if is_backbone else report.missing_new).append(name)
        else:
            report.loaded.append(name)
    report.unexpected = list(inc.unexpected_keys)
    report.incorrect_shapes = list(inc.incorrect_shapes)
    report.config_errors, report.config_warnings = config_problems(cfg)
    return model, report


@dataclass
class BackboneFit:
    """Which backbone tensors of a model a weights file fills (``backbone_fit``)."""

    report: VerifyReport
    backbone_names: list  # every backbone parameter and BN statistic of the model
    missing: list  # of those: not in the file, or in it with another shape
    wrong_shape: list

    @property
    def ok(self):
        return not self.missing


def backbone_fit(weights_path, cfg):
    """Load ``weights_path`` into ``cfg``'s model (built on CPU) as training will, and list the
    backbone tensors it leaves at their random init. Detectron2's own name matching applies where
    the file asks for it (``matching_heuristics``), since the same checkpointer loads it."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = "cpu"  # a pre-flight check: no GPU memory, same names and shapes
    model, report = load_into_model(weights_path, cfg)
    prefixes = tuple(backbone_prefixes(model))
    names = [
        n
        for n in model.state_dict()
        if n.startswith(prefixes) and not n.endswith("num_batches_tracked")
    ]
    wrong = {n for n, *_ in report.incorrect_shapes}
    not_loaded = set(report.missing_backbone) | wrong
    return BackboneFit(
        report, names, [n for n in names if n in not_loaded], [n for n in names if n in wrong]
    )


def file_layout(names):
    """The --target whose names a converted file holds (None when none of ours fits)."""
    if any(".bottom_up." in n for n in names):
        return "fpn"
    if any(n.startswith("roi_heads.res5.") for n in names):
        return "c4"
    if any(n.startswith("backbone.res") for n in names):
        return "dc5"
    if any(n.startswith(("stem.", "res2.")) for n in names):
        return "heuristic"
    return None


def describe_resnet(names):
    """ "ResNet-18" etc. from Detectron2 names (blocks per stage, conv3 or not); None if unclear."""
    blocks = {}
    for n in names:
        m = re.search(r"(?:^|\.)res([2-5])\.(\d+)\.", n)
        if m:
            blocks.setdefault(m.group(1), set()).add(m.group(2))
    counts = tuple(len(blocks.get(s, ())) for s in "2345")
    block = "bottleneck" if any(".conv3." in n for n in names) else "basic"
    depth = RESNET_DEPTHS.get((block, counts))
    return f"ResNet-{depth}" if depth else None


def _mismatch_hint(report, cfg, file_names):
    if not (report.unexpected or report.missing_backbone or report.incorrect_shapes):
        return ""
    in_file = describe_resnet(file_names) or "a ResNet"
    if any(".bottom_up." in n for n in file_names):
        layout = "an FPN model (--target fpn)"
    elif any(n.startswith("roi_heads.res5.") for n in file_names):
        layout = "a C4 model (--target c4)"
    else:
        layout = "name matching (--target heuristic)"
    return (
        f"  The file holds {in_file} for {layout}; the config builds MODEL.RESNETS.DEPTH "
        f"{cfg.MODEL.RESNETS.DEPTH} with {cfg.MODEL.BACKBONE.NAME} and "
        f"{cfg.MODEL.ROI_HEADS.NAME}.\n"
        f"  Fix: convert with the --target of the config (c4: Res5ROIHeads*, fpn: "
        f"build_resnet_fpn_backbone) and set MODEL.RESNETS.DEPTH (R18/R34 also "
        f"RES2_OUT_CHANNELS 64) to the file's depth."
    )


def verify_converted(weights_path, config, overrides=()):
    """Load converted weights into ``config``'s model; raise VerifyError unless the backbone fully
    loaded.

    ``config``: a CfgNode, one of our configs (name or path) or a Detectron2 YAML.
    Prints the table of what was loaded / missing and returns the VerifyReport.
    """
    cfg = load_detection_config(config, overrides)
    _, report = load_into_model(weights_path, cfg)
    if not report.ok:
        weights = load_checkpoint_file(weights_path)
        file_names = list(weights.get("model", weights)) if isinstance(weights, dict) else []
        raise VerifyError(
            f"verification failed: the weights do not fit this config's model, or the config "
            f"would misuse them:\n{report.table()}\n{_mismatch_hint(report, cfg, file_names)}"
        )
    print(report.table())
    return report


# ------------------------------------------------------------------ numerical check
@dataclass
class FeatureReport:
    max_rel_diff: dict  # feature name -> max|d2 - tv| / max|tv|
    tolerance: float

    @property
    def ok(self):
        return all(v <= self.tolerance for v in self.max_rel_diff.values())

    def __str__(self):
        diffs = ", ".join(f"{k} {v:.2e}" for k, v in self.max_rel_diff.items())
        verdict = "OK" if self.ok else "FAILED"
        return f"{verdict}: max relative difference {diffs} (tolerance {self.tolerance:g})"


def torchvision_reference(backbone):
    """A torchvision ResNet (eval mode) holding a torchvision-named backbone state dict."""
    arch = resnet_arch(backbone)
    from torchvision.models.resnet import BasicBlock, Bottleneck
    from torchvision.models.resnet import ResNet as TVResNet

    block = Bottleneck if arch.block == "bottleneck" else BasicBlock
    kwargs = {}
    if arch.block == "bottleneck":
        kwargs = dict(groups=arch.groups, width_per_group=arch.bottleneck_channels // arch.groups)
    model = TVResNet(block, list(arch.blocks_per_stage), **kwargs)
    state = {k: v for k, v in backbone.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise VerifyError(
            f"cannot rebuild the source ResNet: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return model.eval()


def _torchvision_features(model, rgb01):
    mean = torch.tensor(TORCHVISION_PIXEL_MEAN, device=rgb01.device).view(1, 3, 1, 1) / 255
    std = torch.tensor(TORCHVISION_PIXEL_STD, device=rgb01.device).view(1, 3, 1, 1) / 255
    x = (rgb01 - mean) / std
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    res4 = model.layer3(model.layer2(model.layer1(x)))
    return {"res4": res4, "res5": model.layer4(res4)}


def _detectron2_features(model, cfg, rgb255):
    image = rgb255 if cfg.INPUT.FORMAT == "RGB" else rgb255.flip(0)  # CHW, in the config's format
    if hasattr(model, "preprocess_image"):
        x = model.preprocess_image([{"image": image}]).tensor  # the model's own (x - mean) / std
    else:  # SemanticSegmentor (FCN) normalises inside forward, with the same buffers
        x = ((image - model.pixel_mean) / model.pixel_std).unsqueeze(0)
    resnet = getattr(model.backbone, "bottom_up", model.backbone)
    # Run the stages one by one: OUT_FEATURES may hold only some of them (DC5: res5 only).
    x, out = resnet.stem(x), {}
    for name, stage in zip(resnet.stage_names, resnet.stages):
        x = out[name] = stage(x)
    res5 = getattr(getattr(model, "roi_heads", None), "res5", None)
    if "res5" not in out and res5 is not None:
        # C4: res5 runs in the ROI head; apply its residual blocks to the whole res4 map.
        x = out["res4"]
        for block in res5.children():
            if isinstance(block, CNNBlockBase):
                x = block(x)
        out["res5"] = x
    return out


@contextlib.contextmanager
def _full_fp32():
    """No TF32 on CUDA while comparing: its ~1e-3 rounding would swamp a 1e-4 tolerance."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def compare_features(
    reference, weights_path, config, *, overrides=(), image_size=64, seed=0, tolerance=1e-4
):
    """Run ``reference`` (torchvision ResNet) and the Detectron2 model on one random RGB image.

    Raises VerifyError unless res4/res5 match layer3/layer4 within ``tolerance``
    (relative to the largest activation). Both models are put in eval mode.
    """
    cfg = load_detection_config(config, overrides)
    model, report = load_into_model(weights_path, cfg)
    if report.missing_backbone:
        raise VerifyError(f"backbone not fully loaded, cannot compare features:\n{report.table()}")
    model.eval()
    reference = reference.eval().to(model.device)
    # image_size is a multiple of 32, so FPN's size_divisibility adds no padding.
    gen = torch.Generator().manual_seed(seed)
    rgb255 = torch.randint(0, 256, (3, image_size, image_size), generator=gen).float()
    with torch.no_grad(), _full_fp32():
        d2 = _detectron2_features(model, cfg, rgb255.to(model.device))
        tv = _torchvision_features(reference, (rgb255 / 255).unsqueeze(0).to(model.device))
    diffs = {}
    # A dilated res5 (DC5, FCN) has no torchvision counterpart: Detectron2 dilates every res5
    # block, torchvision's replace_stride_with_dilation all but the first. Compare res4 there.
    compared = ("res4",) if cfg.MODEL.RESNETS.RES5_DILATION != 1 else ("res4", "res5")
    for name in compared:
        if d2[name].shape != tv[name].shape:
            raise VerifyError(
                f"{name}: Detectron2 shape {tuple(d2[name].shape)} != torchvision "
                f"{tuple(tv[name].shape)}"
            )
        scale = tv[name].abs().max().clamp_min(1e-12)
        diffs[name] = float((d2[name] - tv[name]).abs().max() / scale)
    result = FeatureReport(diffs, tolerance)
    if not result.ok:
        problems = "\n".join(f"  {e}" for e in report.config_errors + report.config_warnings)
        raise VerifyError(f"converted weights compute different features: {result}\n{problems}")
    return result


def compare_with_source(
    input_path,
    weights_path,
    config,
    *,
    source="auto",
    prefix=None,
    momentum_encoder=False,
    student=False,
    overrides=(),
):
    """``compare_features`` against the ResNet read back from the original checkpoint."""
    extracted = extract_backbone(
        load_checkpoint_file(input_path),
        source=source,
        prefix=prefix,
        momentum_encoder=momentum_encoder,
        student=student,
    )
    return compare_features(
        torchvision_reference(extracted.backbone), weights_path, config, overrides=overrides
    )
