"""Checkpoints as each self-supervised codebase writes them, around a real torchvision ResNet.

Each builder mirrors the codebase's own module structure (attribute names, nn.Sequential
positions, DDP's ``module.``, the dict ``torch.save`` gets), so the key names come from real
modules rather than typed strings. Heads are small: only their names matter. Each returns
``(checkpoint object, {option: torchvision-named ResNet state that option must convert})``;
the momentum / student copies hold different weights, so picking the wrong one is caught.
"""

import argparse
import copy
import itertools

import torch
from torch import nn

from tests.convert.convert_layouts import backbone_state, shifted

# The momentum / student copy: every weight moved by DELTA (small: a ResNet-50 with all weights
# moved by 1 overflows to inf, and the features comparison then compares NaNs).
DELTA = 0.01


def _ddp(state):
    return {"module." + k: v for k, v in state.items()}


def _trunk(model):
    """The torchvision ResNet without its classifier (what most SSL codebases keep)."""
    trunk = copy.deepcopy(model)
    trunk.fc = nn.Identity()
    return trunk


def _mlp(dims, bn=True, last_bias=True):
    layers = []
    for i, (a, b) in enumerate(itertools.pairwise(dims)):
        last = i == len(dims) - 2
        layers.append(nn.Linear(a, b, bias=last_bias if last else not bn))
        if not last:
            layers += [nn.BatchNorm1d(b), nn.ReLU(inplace=True)] if bn else [nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def _features(model):
    return model.fc.in_features


def _momentum_copy(module):
    twin = copy.deepcopy(module)
    with torch.no_grad():
        for t in twin.state_dict().values():
            if t.is_floating_point():
                t.add_(DELTA)
    return twin


# ------------------------------------------------------------------ facebookresearch/swav
class SwAVResNet(nn.Module):
    """src/resnet50.py: the ResNet itself carries projection_head and prototypes."""

    def __init__(self, model, dim=16, hidden=32, n_prototypes=30):
        super().__init__()
        self.padding = nn.ConstantPad2d(1, 0.0)
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, copy.deepcopy(getattr(model, name)))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.projection_head = _mlp([_features(model), hidden, dim])
        self.prototypes = nn.Linear(dim, n_prototypes, bias=False)


def swav(model, released=False):
    """main_swav.py saves {"epoch", "state_dict", "optimizer", "amp"}; released: the bare dict."""
    state = _ddp(SwAVResNet(model).state_dict())
    obj = state if released else {"epoch": 800, "state_dict": state, "optimizer": {}, "amp": {}}
    return obj, {None: backbone_state(model)}


# ------------------------------------------------------------------ facebookresearch/simsiam
class SimSiam(nn.Module):
    """simsiam/builder.py: the projector replaces encoder.fc; predictor beside it."""

    def __init__(self, model, dim=16, pred_dim=8):
        super().__init__()
        self.encoder = copy.deepcopy(model)
        prev = _features(model)
        self.encoder.fc = nn.Sequential(
            nn.Linear(prev, prev, bias=False),
            nn.BatchNorm1d(prev),
            nn.ReLU(inplace=True),
            nn.Linear(prev, prev, bias=False),
            nn.BatchNorm1d(prev),
            nn.ReLU(inplace=True),
            nn.Linear(prev, dim),
            nn.BatchNorm1d(dim, affine=False),
        )
        self.predictor = nn.Sequential(
            nn.Linear(dim, pred_dim, bias=False),
            nn.BatchNorm1d(pred_dim),
            nn.ReLU(inplace=True),
            nn.Linear(pred_dim, dim),
        )


def simsiam(model):
    state = _ddp(SimSiam(model).state_dict())
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": {}}, {
        None: backbone_state(model)
    }


# ------------------------------------------------------------------ barlowtwins / vicreg
class BarlowTwins(nn.Module):
    """barlowtwins/main.py: backbone (fc = Identity), projector, affine-free bn."""

    def __init__(self, model, sizes=(32, 32)):
        super().__init__()
        self.backbone = _trunk(model)
        self.projector = _mlp([_features(model), *sizes], last_bias=False)
        self.bn = nn.BatchNorm1d(sizes[-1], affine=False)


class VICReg(nn.Module):
    """vicreg/main_vicreg.py: backbone (resnet.py, no fc), Projector (an nn.Sequential)."""

    def __init__(self, model, sizes=(32, 32)):
        super().__init__()
        self.backbone = _trunk(model)
        self.projector = _mlp([_features(model), *sizes], last_bias=False)


def barlowtwins(model):
    """checkpoint.pth: dict(epoch, model=DDP state_dict, optimizer)."""
    return {"epoch": 1000, "model": _ddp(BarlowTwins(model).state_dict()), "optimizer": {}}, {
        None: backbone_state(model)
    }


def vicreg(model):
    return {"epoch": 1000, "model": _ddp(VICReg(model).state_dict()), "optimizer": {}}, {
        None: backbone_state(model)
    }


def backbone_only(model):
    """The released Barlow Twins / VICReg / DINO ResNet-50: torch.save(backbone.state_dict())."""
    return _trunk(model).state_dict(), {None: backbone_state(model)}


# ------------------------------------------------------------------ facebookresearch/dino
class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim=24, hidden=32, bottleneck=16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.GELU(),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Linear(hidden, bottleneck),
        )
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))


class MultiCropWrapper(nn.Module):
    """dino/utils.py: backbone (fc and head set to Identity) + head."""

    def __init__(self, backbone, head):
        super().__init__()
        backbone.fc, backbone.head = nn.Identity(), nn.Identity()
        self.backbone, self.head = backbone, head


def dino(model, teacher_ddp=True):
    """main_dino.py's save_dict; both networks are DDP-wrapped for a ResNet (it has BN)."""
    student = MultiCropWrapper(_momentum_copy(model), DINOHead(_features(model)))
    teacher = MultiCropWrapper(copy.deepcopy(model), DINOHead(_features(model)))
    args = argparse.Namespace(
        arch="resnet50",
        out_dim=60000,
        momentum_teacher=0.996,
        lr=0.3,
        global_crops_scale=(0.14, 1.0),
        data_path="/path/to/imagenet/train",
        output_dir=".",
        use_fp16=False,
    )
    teacher_state = teacher.state_dict()
    obj = {
        "student": _ddp(student.state_dict()),
        "teacher": _ddp(teacher_state) if teacher_ddp else teacher_state,
        "optimizer": {},
        "epoch": 800,
        "args": args,
        "dino_loss": {"center": torch.zeros(1, 24)},
    }
    return obj, {None: backbone_state(model), "student": shifted(backbone_state(model), DELTA)}


# ------------------------------------------------------------------ lucidrains/byol-pytorch
class MLP(nn.Module):
    def __init__(self, dim, out, hidden=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out),
        )


class NetWrapper(nn.Module):
    def __init__(self, net, projection_size=16):
        super().__init__()
        self.net = net
        self.projector = MLP(_features(net), projection_size)


class BYOL(nn.Module):
    """byol_pytorch.py: net (the wrapped model), online/target_encoder, online_predictor."""

    def __init__(self, model):
        super().__init__()
        self.net = copy.deepcopy(model)
        self.online_encoder = NetWrapper(self.net)
        self.target_encoder = _momentum_copy(self.online_encoder)
        self.online_predictor = MLP(16, 16)


def byol(model):
    return BYOL(model).state_dict(), {
        None: backbone_state(model),
        "momentum": shifted(backbone_state(model), DELTA),
    }


# ------------------------------------------------------------------ WXinlong/DenseCL
class DenseCLNeck(nn.Module):
    def __init__(self, in_channels, hidden=32, out=16):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(in_channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out)
        )
        self.mlp2 = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, out, 1)
        )


class DenseCL(nn.Module):
    """openselfsup/models/densecl.py: encoder_q = Sequential(backbone, neck); backbone alias."""

    def __init__(self, model):
        super().__init__()
        resnet = _trunk(model)
        del resnet.fc  # OpenSelfSup's ResNet (mmdet's) has no classifier
        self.encoder_q = nn.Sequential(resnet, DenseCLNeck(_features(model)))
        self.encoder_k = _momentum_copy(self.encoder_q)
        self.backbone = self.encoder_q[0]
        for name, shape in (("queue", (16, 8)), ("queue2", (16, 8))):
            self.register_buffer(name, torch.randn(*shape))
            self.register_buffer(name + "_ptr", torch.zeros(1, dtype=torch.long))


def densecl(model):
    """mmcv's save_checkpoint: {"meta", "state_dict" (no DDP prefix), "optimizer"}."""
    meta = {"epoch": 200, "iter": 100, "mmcv_version": "0.4.3", "time": "Mon Jan  4 2021"}
    return {"meta": meta, "state_dict": DenseCL(model).state_dict(), "optimizer": {}}, {
        None: backbone_state(model),
        "momentum": shifted(backbone_state(model), DELTA),
    }


# ------------------------------------------------------------------ zdaxie/PixPro
class MLP2d(nn.Module):
    def __init__(self, in_dim, inner=32, out=16):
        super().__init__()
        self.linear1 = nn.Conv2d(in_dim, inner, 1)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu1 = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv2d(inner, out, 1)


class PixPro(nn.Module):
    """contrast/models/PixPro.py: encoder / encoder_k, projector(_k), instance branch, transform."""

    def __init__(self, model):
        super().__init__()
        self.encoder = _trunk(model)
        del self.encoder.fc  # head_type="early_return": no classifier
        self.encoder_k = _momentum_copy(self.encoder)
        c = _features(model)
        self.projector, self.projector_k = MLP2d(c), MLP2d(c)
        self.projector_instance, self.projector_instance_k = MLP2d(c), MLP2d(c)
        self.predictor = MLP2d(16)
        self.value_transform = MLP2d(16, out=16)


def pixpro(model):
    """main_pretrain.py's save_checkpoint: {"opt": args, "model", "optimizer", "scheduler", ...}."""
    opt = argparse.Namespace(arch="resnet50", pixpro_p=2.0, pixpro_momentum=0.99, epochs=100)
    return {
        "opt": opt,
        "model": _ddp(PixPro(model).state_dict()),
        "optimizer": {},
        "scheduler": {},
        "epoch": 100,
    }, {None: backbone_state(model), "momentum": shifted(backbone_state(model), DELTA)}


# ------------------------------------------------------------------ open-mmlab/mmselfsup 1.x
class ExponentialMovingAverage(nn.Module):
    """mmengine's EMA wrapper: module + steps buffer."""

    def __init__(self, module):
        super().__init__()
        self.module = module
        self.register_buffer("steps", torch.tensor(0))


class BaseDataPreprocessor(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1))


class MMSelfSupMoCoV2(nn.Module):
    """mmselfsup/models/algorithms/mocov2.py: backbone, neck, head, momentum_encoder, queue."""

    def __init__(self, model):
        super().__init__()
        self.data_preprocessor = BaseDataPreprocessor()
        self.backbone = _trunk(model)
        del self.backbone.fc
        self.neck = nn.Module()
        self.neck.mlp = _mlp([_features(model), 32, 16], bn=False)
        self.head = nn.Module()  # ContrastiveHead: the loss only, no parameters
        self.momentum_encoder = ExponentialMovingAverage(
            nn.Sequential(_momentum_copy(self.backbone), copy.deepcopy(self.neck))
        )
        self.register_buffer("queue", torch.randn(16, 8))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def mmselfsup(model):
    """mmengine's CheckpointHook: {"meta", "state_dict", "message_hub", "optimizer", ...}."""
    meta = {
        "epoch": 200,
        "iter": 1000,
        "cfg": "model = dict(type='MoCoV2', ...)",
        "seed": 0,
        "experiment_name": "mocov2_resnet50_8xb32-coslr-200e_in1k",
        "mmengine_version": "0.7.0",
        "dataset_meta": {},
    }
    return {
        "meta": meta,
        "state_dict": MMSelfSupMoCoV2(model).state_dict(),
        "message_hub": {"log_scalars": {}, "runtime_info": {"epoch": 200}},
        "optimizer": {},
        "param_schedulers": [],
    }, {None: backbone_state(model)}


class MMSelfSupMoCoV0(nn.Module):
    """mmselfsup 0.x (and OpenSelfSup) MoCo: encoder_q = Sequential(backbone, neck), with
    self.backbone / self.neck aliases of its parts, encoder_k, queue."""

    def __init__(self, model):
        super().__init__()
        resnet = _trunk(model)
        del resnet.fc
        neck = nn.Module()
        neck.mlp = _mlp([_features(model), 32, 16], bn=False)
        self.encoder_q = nn.Sequential(resnet, neck)
        self.encoder_k = _momentum_copy(self.encoder_q)
        self.backbone, self.neck = self.encoder_q[0], self.encoder_q[1]
        self.register_buffer("queue", torch.randn(16, 8))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))


def mmselfsup_v0(model):
    """mmcv's save_checkpoint: {"meta", "state_dict", "optimizer"}."""
    meta = {"mmcv_version": "1.3.0", "time": "Mon Jan  4 2021", "epoch": 200, "iter": 1000}
    return {"meta": meta, "state_dict": MMSelfSupMoCoV0(model).state_dict(), "optimizer": {}}, {
        None: backbone_state(model)
    }


# ------------------------------------------------------------------ vturrisi/solo-learn
class SoloBYOL(nn.Module):
    """solo/methods/base.py + byol.py: backbone (fc = Identity), classifier, projector,
    predictor; BaseMomentumMethod adds momentum_backbone, momentum_projector."""

    def __init__(self, model, num_classes=10):
        super().__init__()
        c = _features(model)
        self.backbone = _trunk(model)
        self.classifier = nn.Linear(c, num_classes)
        self.projector = _mlp([c, 32, 16])
        self.predictor = _mlp([16, 32, 16])
        self.momentum_backbone = _momentum_copy(self.backbone)
        self.momentum_projector = copy.deepcopy(self.projector)


def sololearn(model):
    """A Lightning checkpoint (trainer.save_checkpoint)."""
    return {
        "epoch": 400,
        "global_step": 1000,
        "pytorch-lightning_version": "2.0.2",
        "state_dict": SoloBYOL(model).state_dict(),
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }, {None: backbone_state(model), "momentum": shifted(backbone_state(model), DELTA)}


# ------------------------------------------------------------------ facebookresearch/vissl
class VisslResNeXt(nn.Module):
    """vissl/models/trunks/resnext.py: the stages live in an nn.ModuleDict, _feature_blocks."""

    def __init__(self, model):
        super().__init__()
        m = copy.deepcopy(model)
        self._feature_blocks = nn.ModuleDict(
            [
                ("conv1", m.conv1),
                ("bn1", m.bn1),
                ("conv1_relu", m.relu),
                ("maxpool", m.maxpool),
                ("layer1", m.layer1),
                ("layer2", m.layer2),
                ("layer3", m.layer3),
                ("layer4", m.layer4),
                ("avgpool", m.avgpool),
                ("flatten", nn.Flatten(1)),
            ]
        )


def vissl(model):
    """VISSL's checkpoint: classy_state_dict -> base_model -> model -> {trunk, heads} (nested)."""
    head = nn.Module()
    head.projection_head = _mlp([_features(model), 32, 16])
    head.prototypes0 = nn.Linear(16, 30, bias=False)
    heads = {f"0.{k}": v for k, v in head.state_dict().items()}
    classy = {
        "train": True,
        "base_model": {
            "model": {"trunk": VisslResNeXt(model).state_dict(), "heads": heads},
            "meta": {"model_version": "0.1"},
        },
        "meta": {},
        "loss": {},
        "optimizer": {},
        "num_updates": 1000,
    }
    return {
        "phase_idx": 199,
        "iteration": 1000,
        "train_phase_idx": 199,
        "iteration_num": 1000,
        "type": "checkpoint",
        "classy_state_dict": classy,
    }, {None: backbone_state(model)}


# ------------------------------------------------------------------ lightly
class LightlySimCLR(nn.Module):
    """lightly's examples: backbone = nn.Sequential(*list(resnet.children())[:-1])."""

    def __init__(self, model):
        super().__init__()
        self.backbone = nn.Sequential(*list(copy.deepcopy(model).children())[:-1])
        self.projection_head = nn.Module()
        self.projection_head.layers = _mlp([_features(model), 32, 16])


class LightlyMoCo(LightlySimCLR):
    def __init__(self, model):
        super().__init__(model)
        self.backbone_momentum = _momentum_copy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)


def lightly(model, form="backbone"):
    if form == "backbone":  # torch.save(backbone.state_dict()): keys 0.weight, 4.0.conv1.weight
        return LightlySimCLR(model).backbone.state_dict(), {None: backbone_state(model)}
    if form == "simclr":
        return LightlySimCLR(model).state_dict(), {None: backbone_state(model)}
    return {"state_dict": LightlyMoCo(model).state_dict()}, {
        None: backbone_state(model),
        "momentum": shifted(backbone_state(model), DELTA),
    }


# ------------------------------------------------------------ huggingface/pytorch-image-models
def timm(model):
    """timm's train.py CheckpointSaver: timm's ResNet names equal torchvision's (fc included)."""
    args = argparse.Namespace(model="resnet50", lr=0.5, epochs=600, model_ema=True)
    return {
        "epoch": 599,
        "arch": "resnet50",
        "state_dict": model.state_dict(),
        "optimizer": {},
        "version": 2,
        "args": args,
        "metric": 80.4,
        "state_dict_ema": shifted(model.state_dict(), DELTA),
    }, {None: backbone_state(model), "momentum": shifted(backbone_state(model), DELTA)}
