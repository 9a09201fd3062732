"""The R50-dilated-C5 backbone with the paper's 512-channel neck (appendix A.1), real configs."""

import pytest
import torch
from detectron2.layers import NaiveSyncBatchNorm, ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, build_model
from detectron2.modeling.backbone.resnet import ResNet
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

import detection  # noqa: F401  (registers the backbone)
from detection.config_lookup import load_config
from detection.modeling.dc5_neck import ResNetDC5Neck, build_resnet_dc5_neck_backbone

DC5_CONFIGS = [f"voc0712_R50_DC5_24k_{init}" for init in ("supervised", "moco", "random")]
# ResNet widths / 8 (as tests/detection/test_configs.py's tiny runs); the neck keeps its 512.
NARROW = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "8",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "32",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
]


@pytest.mark.parametrize("name", DC5_CONFIGS)
def test_dc5_configs_build_the_neck_with_512_channels(name):
    cfg = load_config(name, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
    assert BACKBONE_REGISTRY.get(cfg.MODEL.BACKBONE.NAME) is build_resnet_dc5_neck_backbone
    model = build_model(cfg)
    backbone = model.backbone
    assert isinstance(backbone, ResNetDC5Neck) and isinstance(backbone, ResNet)
    assert backbone.output_shape() == {"dc5": ShapeSpec(channels=512, stride=16)}
    # res5 is dilated (stride 16 kept) and 2048 wide; the neck is a 3x3 conv with (sync) BN.
    assert backbone.res5[0].conv2.dilation == (2, 2)
    assert backbone.neck.weight.shape == (512, 2048, 3, 3)
    assert type(backbone.neck.norm) is NaiveSyncBatchNorm
    # RPN and box head read the neck's 512 channels.
    assert model.proposal_generator.rpn_head.conv.in_channels == 512
    assert model.roi_heads.box_head.output_shape.channels == cfg.MODEL.ROI_BOX_HEAD.FC_DIM
    assert model.roi_heads.box_pooler.output_size == (7, 7)
    # The ResNet's parameters keep the names --target dc5 writes; only the neck is new.
    names = {n for n, _ in model.named_parameters() if n.startswith("backbone.")}
    assert {n.split(".")[1] for n in names} == {"stem", "res2", "res3", "res4", "res5", "neck"}
    with torch.no_grad():
        model.eval()
        out = backbone(torch.zeros(1, 3, 64, 96))
    assert list(out) == ["dc5"] and out["dc5"].shape == (1, 512, 4, 6)


def test_a_training_step_updates_the_neck(one_thread):
    torch.manual_seed(0)
    cfg = load_config("voc0712_R50_DC5_24k_random", NARROW)
    model = build_model(cfg)
    model.train()
    before = model.backbone.neck.weight.detach().clone()
    inputs = []
    for i in range(2):
        inst = Instances((64, 64))
        inst.gt_boxes = Boxes(torch.tensor([[8.0, 8.0, 40.0, 48.0]]) + i)
        inst.gt_classes = torch.tensor([3 + i])
        inputs.append(
            {
                "image": torch.randint(0, 256, (3, 64, 64)).float(),
                "instances": inst,
                "height": 64,
                "width": 64,
            }
        )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    with EventStorage():
        losses = model(inputs)
    total = sum(losses.values())
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_rpn_cls", "loss_rpn_loc"}
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.neck.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(before, model.backbone.neck.weight.detach())


def test_neck_needs_res5_as_the_last_stage():
    cfg = load_config(
        "voc0712_R50_DC5_24k_random", NARROW + ["MODEL.RESNETS.OUT_FEATURES", '["res4"]']
    )
    with pytest.raises(ValueError, match='OUT_FEATURES \\["res5"\\]'):
        build_resnet_dc5_neck_backbone(cfg, ShapeSpec(channels=3))
