"""Checkpoint readers: load a file safely, recognise its layout, extract the ResNet.

Every reader returns the backbone in torchvision names (``conv1``, ``bn1``,
``layer1.0.conv1`` ...) plus the list of what it left out and why; ``mapping.py``
takes it from there. Layouts:

- ``moco``: MoCo v1/v2 (official ``main_moco.py`` and ours): ``[module.]encoder_q.*``
  (query encoder, kept), ``encoder_k.*`` (key encoder), ``queue``, ``queue_ptr``;
  the fc / MLP head is ``encoder_q.fc.*``.
- ``mocov3``: ``[module.]base_encoder.*`` (kept), ``momentum_encoder.*``, ``predictor.*``;
  the projector is ``base_encoder.fc.*`` (``head.*`` in the ViT variant).
- ``torchvision``: a supervised state dict, keys ``conv1.weight``, ``layer1.0...``, ``fc.*``.
- ``prefix``: any state dict whose ResNet sits under a prefix (``backbone.`` ...).
- ``detectron2``: already in Detectron2 names: refused, it needs no conversion.
"""
import os
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from pretrain.io import safe_torch_load
from pretrain.weights.safe_pickle import safe_pickle_load

SOURCES = ("auto", "moco", "mocov3", "torchvision", "prefix", "detectron2")

# Top-level keys under which training scripts store the weights.
_CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "network", "blobs")

KEY_ENCODER_REASON = "MoCo key (momentum) encoder: only the query encoder is transferred"
QUERY_ENCODER_REASON = "MoCo query encoder: --momentum-encoder transfers the momentum encoder"
QUEUE_REASON = "MoCo queue of negative keys (training state)"
PREDICTOR_REASON = "MoCo v3 predictor head"
OUTSIDE_REASON = "outside the selected ResNet (not a backbone tensor)"


class ConversionError(ValueError):
    """The input cannot be converted; the message says why and what to do."""


class AlreadyDetectron2Error(ConversionError):
    """The input already uses Detectron2 names."""


class UnknownLayoutError(ConversionError):
    """No known checkpoint layout matches the keys."""


@dataclass
class Extracted:
    format: str  # "moco", "mocov3", "torchvision", "prefix:<P>"
    backbone: dict  # torchvision names -> torch.Tensor (fc included if present)
    dropped: list = field(default_factory=list)  # [(original key, reason)]
    origin: dict = field(default_factory=dict)  # torchvision name -> key in the file


def load_checkpoint_file(path):
    """Read a checkpoint without executing code: torch files via weights_only, .pkl restricted."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"checkpoint not found: {path!r}\n  Fix: check the path (and the folder in --batch)."
        )
    with open(path, "rb") as f:
        is_zip = f.read(4) == b"PK\x03\x04"  # torch >= 1.6 files are zip archives
    if path.endswith(".pkl") and not is_zip:
        return safe_pickle_load(path)
    return safe_torch_load(path)


def _is_tensor_dict(obj):
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and sum(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()) > len(obj) // 2
    )


def find_state_dict(obj):
    """The {name: tensor} dict inside a checkpoint: itself, or under "state_dict"/"model"/..."""
    if _is_tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            if _is_tensor_dict(obj.get(key)):
                return obj[key]
    # key=repr: a dict may mix str and int keys, which sorted() alone cannot compare.
    found = sorted(obj, key=repr)[:20] if isinstance(obj, dict) else type(obj).__name__
    raise UnknownLayoutError(
        f"no tensor dictionary found; top-level keys: {found}.\n"
        f"  Known containers: the state dict itself or under {list(_CONTAINER_KEYS)}.\n"
        f"  Fix: re-save it as torch.save({{'state_dict': model.state_dict()}}, path)."
    )


def _strip_module(name):
    # DistributedDataParallel adds "module." in front of every name.
    return name[len("module."):] if name.startswith("module.") else name


_D2_NAME = re.compile(r"^(backbone\.)?(bottom_up\.)?(stem\.conv1\.|res[2-5]\.\d+\.)|^roi_heads\.res5\.")
_CAFFE2_NAME = re.compile(r"^(res\d+_\d+_branch|res_conv1_bn_|conv1_w$)")


def _is_detectron2(obj, names):
    if isinstance(obj, dict) and "model" in obj and "__author__" in obj:
        return True
    return any(_D2_NAME.match(n) or _CAFFE2_NAME.match(n) for n in names)


def _resnet_prefixes(names):
    """Prefixes P with P + 'conv1.weight' and P + 'layer1.0.' keys: where ResNets sit."""
    prefixes = set()
    for n in names:
        if n.endswith("conv1.weight") and not re.search(r"layer\d\.\d+\.conv1\.weight$", n):
            p = n[: -len("conv1.weight")]
            if any(m.startswith(p + "layer1.0.") for m in names):
                prefixes.add(p)
    return sorted(prefixes)


def _top_prefixes(names, depth=2):
    counts = Counter(".".join(n.split(".")[:depth]) for n in names)
    return ", ".join(f"{p}.* ({c})" for p, c in counts.most_common(12))


def detect_format(obj, state):
    """Name of the layout of ``state`` (the dict found in ``obj``)."""
    names = [_strip_module(n) for n in state]
    if _is_detectron2(obj, names):
        return "detectron2"
    if any(n.startswith("encoder_q.") for n in names):
        return "moco"
    if any(n.startswith(("base_encoder.", "momentum_encoder.")) for n in names):
        return "mocov3"
    if "conv1.weight" in names and any(n.startswith("layer1.0.") for n in names):
        return "torchvision"
    candidates = [p for p in _resnet_prefixes(names) if p]
    hint = (
        f"  A ResNet was found under prefix(es) {candidates}: rerun with "
        f"--source prefix --prefix {candidates[0]}\n"
        if candidates
        else ""
    )
    raise UnknownLayoutError(
        f"unknown checkpoint layout. Prefixes found: {_top_prefixes(names)}.\n"
        f"  Known layouts: MoCo v1/v2 ([module.]encoder_q.*, encoder_k.*, queue), MoCo v3 "
        f"([module.]base_encoder.*, momentum_encoder.*), torchvision (conv1.weight, layer1.0.*, "
        f"fc.*), Detectron2 (backbone.res2.*, stem.conv1.*: needs no conversion).\n"
        f"{hint}"
        f"  Fix: for another library's checkpoint pass --prefix with the part that holds a "
        f"torchvision-style ResNet (e.g. --prefix backbone.)."
    )


def _as_tensor(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))  # copy: pickled arrays may be read-only
    return value


def _split_by_prefix(state, keep_prefix, reasons):
    """Keep keys under ``keep_prefix`` (prefix stripped); list every other key with a reason.

    ``reasons`` is [(prefix or exact name, reason)]; unmatched keys get OUTSIDE_REASON.
    """
    backbone, dropped, origin = {}, [], {}
    for original, value in state.items():
        name = _strip_module(original)
        if name.startswith(keep_prefix):
            backbone[name[len(keep_prefix):]] = _as_tensor(value)
            origin[name[len(keep_prefix):]] = original
            continue
        reason = next((r for p, r in reasons if name == p or name.startswith(p)), OUTSIDE_REASON)
        dropped.append((original, reason))
    return backbone, dropped, origin


def _complete_prefix(prefix, names):
    """``backbone`` -> ``backbone.`` when the names continue with a dot (the usual typo)."""
    if prefix.endswith(".") or not any(n.startswith(prefix + ".") for n in names):
        return prefix
    return prefix + "."


def extract_backbone(obj, *, source="auto", prefix=None, momentum_encoder=False):
    """Find the ResNet in a loaded checkpoint; return it in torchvision names.

    ``source="auto"`` detects the layout from the keys; any other value forces it.
    """
    if source not in SOURCES:
        raise ConversionError(f"unknown --source {source!r}; choose one of {', '.join(SOURCES)}.")
    if prefix is not None and source == "auto":
        source = "prefix"
    if source == "prefix" and not prefix:
        raise ConversionError(
            "--source prefix needs --prefix, the part of the names before 'conv1.weight' "
            "(e.g. --prefix backbone.)."
        )
    if prefix is not None and source != "prefix":
        raise ConversionError(f"--prefix only applies to --source prefix (got --source {source}).")

    state = find_state_dict(obj)
    detected = detect_format(obj, state) if source == "auto" else source
    if detected == "detectron2":
        raise AlreadyDetectron2Error(
            "this file needs no conversion: its weights already use Detectron2 names "
            "(backbone.res2.*, stem.conv1.*, a {'model', '__author__'} pickle, or Caffe2 "
            "model-zoo names).\n"
            "  Fix: pass the file directly as MODEL.WEIGHTS in your Detectron2 config."
        )
    if momentum_encoder and detected not in ("moco", "mocov3"):
        raise ConversionError(
            f"--momentum-encoder applies to MoCo checkpoints, but this is a {detected} layout."
        )

    if detected == "moco":
        keep, other = ("encoder_k.", "encoder_q.") if momentum_encoder else ("encoder_q.", "encoder_k.")
        other_reason = QUERY_ENCODER_REASON if momentum_encoder else KEY_ENCODER_REASON
        reasons = [(other, other_reason), ("queue", QUEUE_REASON)]
        backbone, dropped, origin = _split_by_prefix(state, keep, reasons)
        fmt = "moco"
    elif detected == "mocov3":
        keep = "momentum_encoder." if momentum_encoder else "base_encoder."
        other = "base_encoder." if momentum_encoder else "momentum_encoder."
        reasons = [(other, KEY_ENCODER_REASON if not momentum_encoder else QUERY_ENCODER_REASON),
                   ("predictor.", PREDICTOR_REASON)]
        backbone, dropped, origin = _split_by_prefix(state, keep, reasons)
        fmt = "mocov3"
    elif detected == "torchvision":
        backbone, dropped, origin = _split_by_prefix(state, "", [])
        fmt = "torchvision"
    else:  # prefix
        # Names are compared without DDP's "module.", so the prefix is too.
        prefix = _complete_prefix(_strip_module(prefix), [_strip_module(n) for n in state])
        backbone, dropped, origin = _split_by_prefix(state, prefix, [])
        fmt = f"prefix:{prefix}"
    if not backbone:
        raise UnknownLayoutError(
            f"no tensors left after selecting the {fmt} ResNet. Prefixes found: "
            f"{_top_prefixes([_strip_module(n) for n in state])}.\n"
            f"  Fix: check --source/--prefix/--momentum-encoder against these prefixes."
        )
    # The kept encoder's fc (MoCo's fc / MLP head) stays in: mapping.py drops it as a head.
    return Extracted(format=fmt, backbone=backbone, dropped=dropped, origin=origin)
