"""The C4 ROI head of the MoCo detection configs."""

from detectron2.layers import get_norm
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads


@ROI_HEADS_REGISTRY.register()
class Res5ROIHeadsExtraNorm(Res5ROIHeads):
    """``Res5ROIHeads`` with one extra norm layer after res5, as described in the MoCo paper.

    The backbone's res4 ends in a norm layer but res5's last block (run per region here)
    ends in a residual sum; MoCo adds ``get_norm(MODEL.RESNETS.NORM)`` there so that the
    features fed to the box/mask predictors are normalised too (official
    moco/detection/train_net.py).
    """

    @classmethod
    def _build_res5_block(cls, cfg):
        seq, out_channels = super()._build_res5_block(cfg)
        seq.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, out_channels))
        return seq, out_channels
