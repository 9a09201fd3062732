"""The checkpoint layouts of self-supervised codebases: how each is recognised, where its ResNet is.

One ``Layout`` row per codebase (``LAYOUTS``, tried in order: the first whose ``detect`` holds
wins, so more specific layouts come first). A row says where the weights sit in the file
(``containers``), which prefix holds the ResNet (``keep``; ``variants`` for the momentum copy or
DINO's student), and which groups are dropped on purpose and why (``groups``). Every other key
is still listed in the report ("outside the selected ResNet"): nothing is dropped unseen.

Names are matched after DistributedDataParallel's leading ``module.`` is removed (per container).
The key names come from each codebase's own model code (see tests/convert/ssl_layouts.py).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

KEY_ENCODER_REASON = "MoCo key (momentum) encoder: only the query encoder is transferred"
QUERY_ENCODER_REASON = "MoCo query encoder: --momentum-encoder transfers the momentum encoder"
QUEUE_REASON = "MoCo queue of negative keys (training state)"
PREDICTOR_REASON = "MoCo v3 predictor head"
MOMENTUM_REASON = "momentum (EMA target) copy of the network: --momentum-encoder converts it"
ONLINE_REASON = "online network: converted unless --momentum-encoder is given"


@dataclass(frozen=True)
class Layout:
    name: str  # the --source value, and "format" in the output's "source" field
    codebase: str
    looks_like: str  # what identifies the file (unknown-layout message, README)
    detect: Callable  # Probe -> bool
    keep: tuple  # ResNet prefix(es) in the view's names; the first present is used
    groups: tuple = ()  # ((name prefix, reason), ...) dropped on purpose
    variants: dict = field(default_factory=dict)  # option ("momentum", "student") -> prefix
    containers: tuple = ()  # ((path of keys, label), ...); () = the found state dict
    sequential: bool = False  # ResNet saved as nn.Sequential(*children()[:-1]): 0., 1., 4.-7.


class Probe:
    """What detection looks at: the top-level keys and the names of the found state dict."""

    def __init__(self, obj, names):
        self.obj = obj
        self.top = set(obj) if isinstance(obj, dict) else set()
        self.names = names  # without "module."; [] when no state dict was found

    def has(self, *prefixes):
        return any(n.startswith(p) for n in self.names for p in prefixes)

    def tensor_dict_at(self, key):
        return is_tensor_dict(self.obj.get(key)) if isinstance(self.obj, dict) else False


def is_tensor_dict(obj):
    return (
        isinstance(obj, dict)
        and len(obj) > 0
        and all(isinstance(k, str) for k in obj)
        and sum(isinstance(v, (torch.Tensor, np.ndarray)) for v in obj.values()) > len(obj) // 2
    )


def strip_module(name):
    # DistributedDataParallel adds "module." in front of every name.
    return name.removeprefix("module.")


def _torchvision_root(p):
    # The stem BN counts too: a file missing its stem conv is then refused naming conv1.weight.
    return bool({"conv1.weight", "bn1.weight"} & set(p.names)) and p.has("layer1.0.")


def sequential_prefixes(names):
    """Prefixes P with P0.weight (the stem conv) and P4.0.conv1.weight (layer1): lightly's form."""
    found = []
    for n in names:
        m = re.match(r"^(.*?)4\.0\.conv1\.weight$", n)
        if m and m.group(1) + "0.weight" in names:
            found.append(m.group(1))
    return sorted(found, key=len)


def _dino(p):
    return any(
        p.tensor_dict_at(k) and any(strip_module(n).startswith("backbone.") for n in p.obj[k])
        for k in ("teacher", "student")
    )


def _vissl(p):
    trunk = p.obj.get("classy_state_dict", {}) if isinstance(p.obj, dict) else {}
    return isinstance(trunk, dict) and "base_model" in trunk


def _lightning(p):
    return bool(p.top & {"pytorch-lightning_version", "hyper_parameters", "hparams_name"})


SWAV = (
    ("projection_head.", "SwAV projection head (projection_head.*)"),
    ("prototypes.", "SwAV prototypes (prototypes.*)"),
)

LAYOUTS = (
    Layout(
        "dino",
        "DINO (facebookresearch/dino), full checkpoint",
        "'teacher'/'student' dicts with [module.]backbone.*, head.*; 'args' (argparse.Namespace)",
        _dino,
        keep=("teacher.backbone.",),
        variants={"student": "student.backbone."},
        containers=((("teacher",), "teacher."), (("student",), "student.")),
        groups=(
            ("teacher.head.", "DINO projection head (head.mlp, head.last_layer)"),
            ("student.head.", "DINO projection head (head.mlp, head.last_layer)"),
            ("teacher.backbone.", "DINO teacher: converted unless --student is given"),
            ("student.backbone.", "DINO student: --student converts it (teacher by default)"),
        ),
    ),
    Layout(
        "vissl",
        "VISSL (facebookresearch/vissl)",
        "classy_state_dict -> base_model -> model -> trunk: _feature_blocks.*, heads",
        _vissl,
        keep=("trunk._feature_blocks.",),
        containers=((("classy_state_dict", "base_model", "model"), ""),),
        groups=(("heads.", "VISSL heads (projection / clustering / linear)"),),
    ),
    Layout(
        "timm",
        "timm (huggingface/pytorch-image-models) train.py checkpoint",
        "'state_dict' (torchvision names, fc), 'state_dict_ema', 'arch', 'version', 'args'",
        lambda p: {"arch", "version"} <= p.top and _torchvision_root(p),
        keep=("model.",),
        variants={"momentum": "ema."},
        containers=((("state_dict",), "model."), (("state_dict_ema",), "ema.")),
        groups=(
            ("model.", "timm model weights: converted unless --momentum-encoder is given"),
            ("ema.", "timm EMA copy (--model-ema): --momentum-encoder converts it"),
        ),
    ),
    Layout(
        "sololearn",
        "solo-learn (vturrisi/solo-learn), Lightning checkpoint",
        "Lightning keys (pytorch-lightning_version, hyper_parameters), state_dict -> backbone.*, "
        "momentum_backbone.*, projector.*, classifier.*",
        lambda p: _lightning(p) and p.has("backbone."),
        keep=("backbone.",),
        variants={"momentum": "momentum_backbone."},
        groups=(
            ("backbone.", ONLINE_REASON),
            ("momentum_backbone.", MOMENTUM_REASON),
            ("classifier.", "online linear classifier (solo-learn's linear probe)"),
            ("momentum_classifier.", "online linear classifier of the momentum backbone"),
            ("projector.", "projection head (projector.*)"),
            ("momentum_projector.", "momentum projection head (momentum_projector.*)"),
            ("predictor.", "predictor head (predictor.*)"),
            ("prototypes.", "prototypes (prototypes.*)"),
            ("head.", "method head (head.*)"),
            ("momentum_head.", "momentum head"),
            ("queue", "queue of negatives / memory bank (training state)"),
        ),
    ),
    Layout(
        "densecl",
        "DenseCL (WXinlong/DenseCL, OpenSelfSup)",
        "state_dict -> encoder_q.0.* (ResNet), encoder_q.1.* (neck), encoder_k.*, backbone.* "
        "(alias), queue, queue2; 'meta'",
        lambda p: p.has("encoder_q.0.") and p.has("queue2", "encoder_q.1.mlp2."),
        keep=("encoder_q.0.",),
        variants={"momentum": "encoder_k.0."},
        groups=(
            ("encoder_q.0.", QUERY_ENCODER_REASON),
            ("encoder_k.0.", KEY_ENCODER_REASON),
            ("encoder_q.1.", "DenseCL neck (global and dense projection heads)"),
            ("encoder_k.1.", "DenseCL key neck (global and dense projection heads)"),
            ("backbone.", "alias of encoder_q.0 (OpenSelfSup keeps both names: same tensors)"),
            ("queue", "DenseCL queues of negative keys (global and dense; training state)"),
        ),
    ),
    Layout(
        "mmselfsup",
        "OpenMMLab mmselfsup / mmpretrain self-supervised algorithms",
        "'meta', state_dict -> backbone.*, neck.*, head.* (encoder_q/k, momentum_encoder)",
        lambda p: "meta" in p.top and p.has("backbone."),
        keep=("backbone.",),
        groups=(
            ("neck.", "mmselfsup neck (projection / pooling)"),
            ("head.", "mmselfsup head (loss / prediction head)"),
            ("encoder_q.", "alias of backbone + neck (mmselfsup 0.x keeps both names)"),
            ("encoder_k.", KEY_ENCODER_REASON),
            ("momentum_encoder.", "mmselfsup momentum encoder (EMA copy)"),
            ("target_net.", "mmselfsup target network (EMA copy)"),
            ("predictor.", "predictor head"),
            ("data_preprocessor.", "mmselfsup data preprocessor constants (mean/std)"),
            ("queue", QUEUE_REASON),
        ),
    ),
    Layout(
        "barlowtwins",
        "Barlow Twins (facebookresearch/barlowtwins) training checkpoint",
        "'model' -> module.backbone.*, module.projector.*, module.bn.* (affine-free BN)",
        lambda p: (
            "model" in p.top
            and p.has("backbone.")
            and p.has("projector.")
            and p.has("bn.running_mean")
        ),
        keep=("backbone.",),
        groups=(
            ("projector.", "Barlow Twins projector (projector.*)"),
            ("bn.", "Barlow Twins affine-free BN of the embeddings (bn.*)"),
        ),
    ),
    Layout(
        "vicreg",
        "VICReg (facebookresearch/vicreg) training checkpoint",
        "'model' -> module.backbone.*, module.projector.*",
        lambda p: "model" in p.top and p.has("backbone.") and p.has("projector."),
        keep=("backbone.",),
        groups=(("projector.", "VICReg projector (projector.*)"),),
    ),
    Layout(
        "pixpro",
        "PixPro (zdaxie/PixPro)",
        "'model' -> module.encoder.*, module.encoder_k.*, projector*, value_transform; 'opt'",
        lambda p: p.has("encoder.") and p.has("encoder_k.") and p.has("projector."),
        keep=("encoder.",),
        variants={"momentum": "encoder_k."},
        groups=(
            ("encoder.", ONLINE_REASON),
            ("encoder_k.", MOMENTUM_REASON),
            ("projector.", "PixPro pixel projector"),
            ("projector_k.", "PixPro momentum projector"),
            ("projector_instance.", "PixPro instance projector"),
            ("projector_instance_k.", "PixPro momentum instance projector"),
            ("predictor.", "PixPro instance predictor"),
            ("value_transform.", "PixPro pixel-propagation transform"),
        ),
    ),
    Layout(
        "simsiam",
        "SimSiam (facebookresearch/simsiam)",
        "state_dict -> module.encoder.* (projector in encoder.fc), module.predictor.*",
        lambda p: p.has("encoder.") and p.has("predictor.") and not p.has("encoder_k."),
        keep=("encoder.",),
        groups=(("predictor.", "SimSiam predictor (predictor.*)"),),
    ),
    Layout(
        "byol",
        "BYOL, PyTorch port (lucidrains/byol-pytorch)",
        "online_encoder.net.* (ResNet), online_encoder.projector.*, online_predictor.*, "
        "target_encoder.*, net.* (alias)",
        lambda p: p.has("online_encoder.net."),
        keep=("online_encoder.net.",),
        variants={"momentum": "target_encoder.net."},
        groups=(
            ("online_encoder.net.", ONLINE_REASON),
            ("online_encoder.projector.", "BYOL projector (online)"),
            ("online_predictor.", "BYOL predictor"),
            ("target_encoder.net.", MOMENTUM_REASON),
            ("target_encoder.projector.", "BYOL projector (target)"),
            ("net.", "alias of online_encoder.net (the wrapped model: same tensors)"),
        ),
    ),
    Layout(
        "moco",
        "MoCo v1/v2 (facebookresearch/moco, ours)",
        "[module.]encoder_q.*, encoder_k.*, queue",
        lambda p: p.has("encoder_q."),
        keep=("encoder_q.",),
        variants={"momentum": "encoder_k."},
        groups=(
            ("encoder_q.", QUERY_ENCODER_REASON),
            ("encoder_k.", KEY_ENCODER_REASON),
            ("queue", QUEUE_REASON),
        ),
    ),
    Layout(
        "mocov3",
        "MoCo v3 (facebookresearch/moco-v3)",
        "[module.]base_encoder.*, momentum_encoder.*, predictor.*",
        lambda p: p.has("base_encoder.", "momentum_encoder."),
        keep=("base_encoder.",),
        variants={"momentum": "momentum_encoder."},
        groups=(
            ("base_encoder.", QUERY_ENCODER_REASON),
            ("momentum_encoder.", KEY_ENCODER_REASON),
            ("predictor.", PREDICTOR_REASON),
        ),
    ),
    Layout(
        "swav",
        "SwAV / DeepCluster-v2 / SeLa-v2 (facebookresearch/swav)",
        "module.conv1.weight, module.layer1.*, module.projection_head.*, module.prototypes.*",
        lambda p: _torchvision_root(p) and p.has("projection_head.", "prototypes."),
        keep=("",),
        groups=SWAV,
    ),
    Layout(
        "lightly",
        "lightly (nn.Sequential(*list(resnet.children())[:-1]))",
        "0.weight (stem conv), 1.* (stem BN), 4.0.conv1.weight ... 7.* (layer1-4), "
        "optionally under backbone.; projection_head.*",
        lambda p: bool(sequential_prefixes(p.names)),
        keep=("", "backbone."),
        sequential=True,
        variants={"momentum": "backbone_momentum."},
        groups=(
            ("backbone.", ONLINE_REASON),
            ("projection_head.", "lightly projection head"),
            ("prediction_head.", "lightly prediction head"),
            ("projection_head_momentum.", "lightly momentum projection head"),
            ("backbone_momentum.", MOMENTUM_REASON),
            ("prototypes.", "lightly prototypes"),
        ),
    ),
    Layout(
        "torchvision",
        "torchvision state dict (supervised; also the backbone-only files of "
        "Barlow Twins, VICReg, DINO, DenseCL; timm ResNet weights)",
        "conv1.weight, layer1.0.*, fc.*",
        _torchvision_root,
        keep=("",),
    ),
)
BY_NAME = {layout.name: layout for layout in LAYOUTS}

# nn.Sequential(*list(resnet.children())[:-1]): 0 conv1, 1 bn1, 2 relu, 3 maxpool, 4-7 layer1-4.
SEQUENTIAL_NAMES = {
    "0": "conv1",
    "1": "bn1",
    "4": "layer1",
    "5": "layer2",
    "6": "layer3",
    "7": "layer4",
}


def detect(probe):
    """The first layout whose signature the probe shows, or None."""
    return next((layout for layout in LAYOUTS if layout.detect(probe)), None)


def known_layouts_text():
    return "; ".join(f"{layout.name}: {layout.looks_like}" for layout in LAYOUTS)


def _flatten(d, prefix=""):
    """Nested dicts (VISSL's trunk/heads) as {"a.b.c": value}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def view(layout, obj, state):
    """{name as the layout sees it: (key in the file, value)} for ``layout``.

    ``state`` is the state dict found by pretrain.weights.reader (used when the layout names no
    containers); multi-container layouts prefix each container's names with its label.
    """
    if not layout.containers:
        return {strip_module(k): (k, v) for k, v in state.items()}
    named = {}
    for path, label in layout.containers:
        node = obj
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        where = "/".join(path)
        for k, v in _flatten(node).items():
            named[label + strip_module(k)] = (f"{where}:{k}", v)
    return named


def sequential_to_torchvision(name):
    """``4.0.conv1.weight`` -> ``layer1.0.conv1.weight``; other names unchanged."""
    head, _, rest = name.partition(".")
    return f"{SEQUENTIAL_NAMES[head]}.{rest}" if head in SEQUENTIAL_NAMES and rest else name
