"""Real ResNet weights and the checkpoint layouts of each source, as their tools write them.

Weights are random but every BN gets random affine parameters AND random running
statistics, so a swapped or missing BN tensor changes the features (the
default init, mean 0 / var 1 / weight 1 / bias 0, would hide such bugs).
"""

import torch
import torchvision

# Our task configs for MoCo-initialised fine-tuning (RGB, MoCo pixel mean/std,
# STRIDE_IN_1X1 False; naiveSyncBN, which on one CPU process works like BN),
# resolved by detection.config.load_config.
C4_CONFIG = "voc0712_R50_C4_24k_moco"  # Faster R-CNN R50-C4, Res5ROIHeadsExtraNorm
FPN_CONFIG = "coco_R50_FPN_1x_moco"  # Mask R-CNN R50-FPN
R18_OVERRIDES = ["MODEL.RESNETS.DEPTH", "18", "MODEL.RESNETS.RES2_OUT_CHANNELS", "64"]


def random_resnet(arch, seed):
    torch.manual_seed(seed)
    model = torchvision.models.get_model(arch, weights=None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(1000)
    return model.eval()


def shifted(state, delta):
    """A different set of weights with the same names (stands in for a second encoder)."""
    return {k: v + delta if v.is_floating_point() else v.clone() for k, v in state.items()}


def mlp_head(prefix, channels, dim=128):
    """MoCo v2's fc: Linear(C, C), ReLU, Linear(C, dim) -> fc.0.*, fc.2.*."""
    return {
        f"{prefix}fc.0.weight": torch.randn(channels, channels),
        f"{prefix}fc.0.bias": torch.randn(channels),
        f"{prefix}fc.2.weight": torch.randn(dim, channels),
        f"{prefix}fc.2.bias": torch.randn(dim),
    }


def backbone_state(model):
    """torchvision state dict without the ImageNet classifier."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}


def moco_v2_checkpoint(model, channels):
    """The official main_moco.py checkpoint: DDP names, encoder_q/k with MLP heads, queue."""
    q = backbone_state(model)
    k = shifted(q, 1.0)
    state = {}
    state.update({"module.encoder_q." + n: v for n, v in q.items()})
    state.update(mlp_head("module.encoder_q.", channels))
    state.update({"module.encoder_k." + n: v for n, v in k.items()})
    state.update(mlp_head("module.encoder_k.", channels))
    state["module.queue"] = torch.nn.functional.normalize(torch.randn(128, 256), dim=0)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {
        "epoch": 200,
        "arch": "resnet50",
        "state_dict": state,
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.0, "momentum": 0.9}]},
    }


def mocov3_checkpoint(model, channels):
    """The official MoCo v3 (ResNet) checkpoint: base/momentum encoders, projector in
    fc, predictor.
    """
    base = backbone_state(model)
    momentum = shifted(base, -1.0)
    state = {}
    for prefix, weights in (("module.base_encoder.", base), ("module.momentum_encoder.", momentum)):
        state.update({prefix + n: v for n, v in weights.items()})
        state.update(mlp_head(prefix, channels, dim=256))
    state.update(
        {
            "module.predictor.0.weight": torch.randn(4096, 256),
            "module.predictor.1.running_mean": torch.zeros(4096),
            "module.predictor.3.weight": torch.randn(256, 4096),
        }
    )
    return {"epoch": 100, "arch": "resnet50", "state_dict": state, "optimizer": {}, "scaler": {}}
