"""Checkpoint readers: load a file safely, recognise its layout, extract the ResNet.

Every reader returns the backbone in torchvision names (``conv1``, ``bn1``,
``layer1.0.conv1`` ...) plus the list of what it left out and why; ``mapping.py``
takes it from there. The layouts of the codebases we know (MoCo v1/v2/v3, SwAV,
SimSiam, Barlow Twins, VICReg, DINO, BYOL, DenseCL, PixPro, mmselfsup, solo-learn,
VISSL, lightly, timm, torchvision) are the table in ``pretrain.weights.layouts``; besides them:

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
from pretrain.weights.integrity import check_zip_records
from pretrain.weights.layouts import (
    BY_NAME,
    Probe,
    detect,
    is_tensor_dict,
    known_layouts_text,
    sequential_prefixes,
    sequential_to_torchvision,
    strip_module,
    view,
)
from pretrain.weights.safe_pickle import safe_pickle_load

SOURCES = ("auto", *BY_NAME, "prefix", "detectron2")

# Top-level keys under which training scripts store the weights.
_CONTAINER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "network", "blobs")

OUTSIDE_REASON = "outside the selected ResNet (not a backbone tensor)"
NOT_A_TENSOR_REASON = "not a tensor (a number or string stored among the weights)"


class ConversionError(ValueError):
    """The input cannot be converted; the message says why and what to do."""


class AlreadyDetectron2Error(ConversionError):
    """The input already uses Detectron2 names."""


class UnknownLayoutError(ConversionError):
    """No known checkpoint layout matches the keys."""


@dataclass
class Extracted:
    format: str  # a pretrain.weights.layouts name ("moco", "swav", ...) or "prefix:<P>"
    backbone: dict  # torchvision names -> torch.Tensor (fc included if present)
    dropped: list = field(default_factory=list)  # [(original key, reason)]
    origin: dict = field(default_factory=dict)  # torchvision name -> key in the file
    other_entries: list = field(default_factory=list)  # top-level entries that are not weights


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
    if is_zip:
        check_zip_records(path)  # bit rot and cut copies fail here, not as garbage weights
    return safe_torch_load(path)


def find_state_dict(obj):
    """The {name: tensor} dict inside a checkpoint: itself, or under "state_dict"/"model"/..."""
    if is_tensor_dict(obj):
        return obj
    if isinstance(obj, dict):
        for key in _CONTAINER_KEYS:
            if is_tensor_dict(obj.get(key)):
                return obj[key]
    # key=repr: a dict may mix str and int keys, which sorted() alone cannot compare.
    found = sorted(obj, key=repr)[:20] if isinstance(obj, dict) else type(obj).__name__
    raise UnknownLayoutError(
        f"no tensor dictionary found; top-level keys: {found}.\n"
        f"  Known containers: the state dict itself or under {list(_CONTAINER_KEYS)}.\n"
        f"  Fix: re-save it as torch.save({{'state_dict': model.state_dict()}}, path)."
    )


_D2_NAME = re.compile(
    r"^(backbone\.)?(bottom_up\.)?(stem\.conv1\.|res[2-5]\.\d+\.)|^roi_heads\.res5\."
)
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


def _state_or_none(obj):
    try:
        return find_state_dict(obj)
    except UnknownLayoutError:
        return None  # DINO's teacher/student, VISSL's nesting: the layouts find those


def detect_format(obj, state=None):
    """Name of the layout of the checkpoint ``obj`` (``state``: its state dict, if found)."""
    state = _state_or_none(obj) if state is None else state
    names = [strip_module(n) for n in state] if state is not None else []
    if _is_detectron2(obj, names):
        return "detectron2"
    layout = detect(Probe(obj, names))
    if layout is not None:
        return layout.name
    if state is None:
        find_state_dict(obj)  # raises: no tensor dictionary anywhere we look
    candidates = [p for p in _resnet_prefixes(names) if p]
    hint = (
        f"  A ResNet was found under prefix(es) {candidates}: rerun with "
        f"--source prefix --prefix {candidates[0]}\n"
        if candidates
        else ""
    )
    raise UnknownLayoutError(
        f"unknown checkpoint layout. Prefixes found: {_top_prefixes(names)}.\n"
        f"  Known layouts (--source NAME forces one): {known_layouts_text()}; Detectron2 "
        f"(backbone.res2.*, stem.conv1.*: needs no conversion).\n"
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
        name = strip_module(original)
        if name.startswith(keep_prefix):
            backbone[name[len(keep_prefix) :]] = _as_tensor(value)
            origin[name[len(keep_prefix) :]] = original
            continue
        reason = next((r for p, r in reasons if name == p or name.startswith(p)), OUTSIDE_REASON)
        dropped.append((original, reason))
    return backbone, dropped, origin


def _complete_prefix(prefix, names):
    """``backbone`` -> ``backbone.`` when the names continue with a dot (the usual typo)."""
    if prefix.endswith(".") or not any(n.startswith(prefix + ".") for n in names):
        return prefix
    return prefix + "."


def _split_layout(named, keep, groups, sequential):
    """Keep names under ``keep`` (renamed to torchvision's); list every other name with a reason.

    A group equal to ``keep`` is the part being converted, so it is not a reason to drop.
    """
    backbone, dropped, origin = {}, [], {}
    for name, (original, value) in named.items():
        reason = next(
            (r for p, r in groups if p != keep and (name == p or name.startswith(p))), None
        )
        if reason is None and name.startswith(keep):
            if not isinstance(value, (torch.Tensor, np.ndarray)):
                dropped.append((original, NOT_A_TENSOR_REASON))
                continue
            tv = name[len(keep) :]
            tv = sequential_to_torchvision(tv) if sequential else tv
            backbone[tv], origin[tv] = _as_tensor(value), original
        else:
            dropped.append((original, reason or OUTSIDE_REASON))
    return backbone, dropped, origin


def _other_entries(obj, state, layout):
    """Top-level entries besides the weights (optimizer, epoch, args ...): listed, not converted."""
    if not isinstance(obj, dict) or obj is state:
        return []
    used = {path[0] for path, _ in layout.containers} if layout and layout.containers else set()
    used |= {k for k, v in obj.items() if v is state}
    return [str(k) for k in obj if k not in used]


def _choose_keep(layout, named, option):
    if option:
        return layout.variants[option]
    if layout.sequential:
        found = sequential_prefixes(list(named))
        return found[0] if found else layout.keep[0]
    return next((k for k in layout.keep if any(n.startswith(k) for n in named)), layout.keep[0])


def _option(layout_name, momentum_encoder, student):
    if momentum_encoder and student:
        raise ConversionError("--momentum-encoder and --student exclude each other; give one.")
    option = "momentum" if momentum_encoder else "student" if student else None
    layout = BY_NAME.get(layout_name)
    if option and (layout is None or option not in layout.variants):
        have = [n for n, lay in BY_NAME.items() if option in lay.variants]
        flag = "--momentum-encoder" if option == "momentum" else "--student"
        what = (
            "MoCo and the other layouts with a momentum copy"
            if option == "momentum"
            else "DINO checkpoints (teacher and student)"
        )
        raise ConversionError(
            f"{flag} applies to {what} ({', '.join(have)}), but this is a {layout_name} layout."
        )
    return option


def extract_backbone(obj, *, source="auto", prefix=None, momentum_encoder=False, student=False):
    """Find the ResNet in a loaded checkpoint; return it in torchvision names.

    ``source="auto"`` detects the layout from the keys; any other value forces it.
    ``momentum_encoder`` / ``student`` pick the layout's momentum copy / DINO's student.
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

    state = _state_or_none(obj)
    detected = detect_format(obj, state) if source == "auto" else source
    if detected == "detectron2":
        raise AlreadyDetectron2Error(
            "this file needs no conversion: its weights already use Detectron2 names "
            "(backbone.res2.*, stem.conv1.*, a {'model', '__author__'} pickle, or Caffe2 "
            "model-zoo names).\n"
            "  Fix: pass the file directly as MODEL.WEIGHTS in your Detectron2 config."
        )
    option = _option(detected, momentum_encoder, student)
    layout = BY_NAME.get(detected)
    if layout is None or not layout.containers:
        state = find_state_dict(obj) if state is None else state  # raises when there is none
    if layout is None:  # prefix
        # Names are compared without DDP's "module.", so the prefix is too.
        prefix = _complete_prefix(strip_module(prefix), [strip_module(n) for n in state])
        backbone, dropped, origin = _split_by_prefix(state, prefix, [])
        fmt = f"prefix:{prefix}"
        all_names = [strip_module(n) for n in state]
    else:
        named = view(layout, obj, state)
        keep = _choose_keep(layout, named, option)
        backbone, dropped, origin = _split_layout(named, keep, layout.groups, layout.sequential)
        fmt = layout.name
        all_names = list(named)
    if not backbone:
        raise UnknownLayoutError(
            f"no tensors left after selecting the {fmt} ResNet. Prefixes found: "
            f"{_top_prefixes(all_names)}.\n"
            f"  Fix: check --source/--prefix/--momentum-encoder/--student against these prefixes."
        )
    # The kept encoder's fc (MoCo's fc / MLP head) stays in: mapping.py drops it as a head.
    return Extracted(
        format=fmt,
        backbone=backbone,
        dropped=dropped,
        origin=origin,
        other_entries=_other_entries(obj, state, layout),
    )
