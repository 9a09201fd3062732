"""The R50-dilated-C5 backbone of the MoCo paper: the dilated ResNet plus its 512-channel neck.

Appendix A.1 of the paper (VOC, R50-dilated-C5): after the dilated res5, "a 3x3 convolution
(with BN) that reduces dimension to 512" feeds the RPN and the box head. Detectron2's
Base-RCNN-DilatedC5 feeds the 2048 res5 channels straight in, so the neck is registered here.

``ResNetDC5Neck`` *is* the ResNet (a subclass holding the same stem and stages) with one more
child, ``neck``: the pretrained tensors keep the names ``tools/convert.py --target dc5`` writes
(``backbone.stem.*``, ``backbone.res2.*`` ... ``backbone.res5.*``), and only ``backbone.neck.*``
is new. A wrapper holding the ResNet as a child would move them to ``backbone.<child>.*``.
"""

import fvcore.nn.weight_init as weight_init
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY
from detectron2.modeling.backbone.resnet import ResNet, build_resnet_backbone
from torch.nn import functional as F

OUT_FEATURE = "dc5"  # what RPN.IN_FEATURES / ROI_HEADS.IN_FEATURES name (stride 16)
NEW_CHILDREN = ("neck",)  # children of the backbone that no pretrained file holds


class ResNetDC5Neck(ResNet):
    """A ResNet whose last stage's output goes through a 3x3 conv, norm and ReLU to
    ``out_channels``."""

    def __init__(self, resnet, *, out_channels, norm):
        last = resnet.stage_names[-1]
        super().__init__(resnet.stem, [list(s) for s in resnet.stages], out_features=[last])
        in_channels = resnet._out_feature_channels[last]
        self._in_feature = last
        self._neck_stride = resnet._out_feature_strides[last]
        self.neck = Conv2d(
            in_channels,
            out_channels,
            3,
            padding=1,
            bias=not norm,
            norm=get_norm(norm, out_channels),
            activation=F.relu,
        )
        weight_init.c2_msra_fill(self.neck)
        self._out_features = [OUT_FEATURE]
        self._out_feature_channels[OUT_FEATURE] = out_channels
        self._out_feature_strides[OUT_FEATURE] = self._neck_stride

    def forward(self, x):
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return {OUT_FEATURE: self.neck(x)}

    def output_shape(self):
        return {
            OUT_FEATURE: ShapeSpec(
                channels=self._out_feature_channels[OUT_FEATURE], stride=self._neck_stride
            )
        }


@BACKBONE_REGISTRY.register()
def build_resnet_dc5_neck_backbone(cfg, input_shape):
    """Detectron2's ResNet (RESNETS.*: RES5_DILATION 2, FREEZE_AT...) + the MODEL.DC5_NECK conv."""
    resnet = build_resnet_backbone(cfg, input_shape)  # builds, then freezes per FREEZE_AT
    if resnet.stage_names[-1] != "res5":
        raise ValueError(
            f"build_resnet_dc5_neck_backbone puts its neck after res5, but "
            f"MODEL.RESNETS.OUT_FEATURES {list(cfg.MODEL.RESNETS.OUT_FEATURES)} stops at "
            f"{resnet.stage_names[-1]}. "
            'Fix: set MODEL.RESNETS.OUT_FEATURES ["res5"].'
        )
    neck = cfg.MODEL.DC5_NECK
    return ResNetDC5Neck(resnet, out_channels=neck.OUT_CHANNELS, norm=neck.NORM)
