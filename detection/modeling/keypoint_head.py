"""Norm in the one newly initialised head Detectron2 cannot normalise: the keypoint head.

The MoCo paper fine-tunes with BN also in newly initialised layers. Detectron2 already has
``MODEL.FPN.NORM``, ``MODEL.ROI_BOX_HEAD.NORM`` (conv layers of ``FastRCNNConvFCHead``),
``MODEL.ROI_MASK_HEAD.NORM`` and ``MODEL.SEM_SEG_HEAD.NORM``; its keypoint head
(``KRCNNConvDeconvUpsampleHead``) has no norm option, so this registers one that reads
``MODEL.ROI_KEYPOINT_HEAD.NORM`` (added by ``add_moco_config``; "" = Detectron2's head).
"""

from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling.roi_heads.keypoint_head import (
    ROI_KEYPOINT_HEAD_REGISTRY,
    KRCNNConvDeconvUpsampleHead,
)
from torch import nn


@ROI_KEYPOINT_HEAD_REGISTRY.register()
class KRCNNConvDeconvUpsampleHeadNorm(KRCNNConvDeconvUpsampleHead):
    """``KRCNNConvDeconvUpsampleHead`` with ``norm`` after each 3x3 conv (before its ReLU)."""

    @configurable
    def __init__(self, input_shape, *, num_keypoints, conv_dims, norm="", **kwargs):
        super().__init__(input_shape, num_keypoints=num_keypoints, conv_dims=conv_dims, **kwargs)
        if not norm:
            return
        in_channels = input_shape.channels
        for idx, channels in enumerate(conv_dims, 1):
            # Same slot in the nn.Sequential, so layer order (conv, norm, relu) is kept.
            conv = Conv2d(
                in_channels, channels, 3, padding=1, bias=False, norm=get_norm(norm, channels)
            )
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            setattr(self, f"conv_fcn{idx}", conv)
            in_channels = channels

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret["norm"] = cfg.MODEL.ROI_KEYPOINT_HEAD.get("NORM", "")
        return ret
