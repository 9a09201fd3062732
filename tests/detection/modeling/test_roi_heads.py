"""Res5ROIHeadsExtraNorm and the norm options of newly initialised heads, built from
real configs.
"""

import torch
from detectron2.config import get_cfg
from detectron2.layers import NaiveSyncBatchNorm, ShapeSpec
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads, build_roi_heads
from detectron2.modeling.roi_heads.keypoint_head import build_keypoint_head
from detectron2.structures import Boxes, ImageList, Instances
from detectron2.utils.events import EventStorage

import detection  # noqa: F401  (registers the heads)
from detection.config import add_moco_config
from detection.config_lookup import load_config
from detection.modeling.roi_heads import Res5ROIHeadsExtraNorm
from tests.detection.tiny_detection import write_tiny_c4_config


def _c4_cfg(tmp_path, *overrides):
    return load_config(write_tiny_c4_config(tmp_path), list(overrides))


def _proposals(n_images, n_boxes, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_images):
        xy = torch.rand(n_boxes, 2, generator=g) * (size / 2)
        wh = torch.rand(n_boxes, 2, generator=g) * (size / 2) + 4
        inst = Instances((size, size))
        inst.proposal_boxes = Boxes(torch.cat([xy, xy + wh], dim=1))
        inst.objectness_logits = torch.rand(n_boxes, generator=g)
        out.append(inst)
    return out


def test_registered_and_has_norm_after_res5(tmp_path):
    assert ROI_HEADS_REGISTRY.get("Res5ROIHeadsExtraNorm") is Res5ROIHeadsExtraNorm
    cfg = _c4_cfg(tmp_path)
    heads = build_roi_heads(cfg, {"res4": ShapeSpec(channels=1024, stride=16)})
    assert isinstance(heads, Res5ROIHeadsExtraNorm) and isinstance(heads, Res5ROIHeads)
    # The last module of res5 is the extra norm, of the backbone's norm type, on res5's output
    # width.
    names = [n for n, _ in heads.res5.named_children()]
    assert names[-1] == "norm" and len(names) == 4  # three bottleneck blocks + norm
    assert type(heads.res5.norm) is NaiveSyncBatchNorm and heads.res5.norm.num_features == 2048

    # Detectron2's Res5ROIHeads from the same config lacks exactly that layer.
    plain = Res5ROIHeads(cfg, {"res4": ShapeSpec(channels=1024, stride=16)})
    extra = set(heads.state_dict()) - set(plain.state_dict())
    assert extra == {
        f"res5.norm.{k}"
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    }


def test_forward_shapes_train_and_eval(tmp_path):
    cfg = _c4_cfg(tmp_path, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "8")
    heads = build_roi_heads(cfg, {"res4": ShapeSpec(channels=1024, stride=16)})
    features = {"res4": torch.randn(2, 1024, 4, 4)}
    images = ImageList(torch.zeros(2, 3, 64, 64), [(64, 64), (64, 64)])
    proposals = _proposals(2, 12, 64)

    # The res5 + norm features the predictors see: (regions, 2048, 4, 4) for a 7x7 pooler.
    pooled = heads._shared_roi_transform([features["res4"]], [p.proposal_boxes for p in proposals])
    assert pooled.shape == (24, 2048, 4, 4)

    heads.eval()
    with torch.no_grad():
        results, _ = heads(images, features, proposals)
    assert len(results) == 2
    for r in results:
        assert r.pred_boxes.tensor.shape[1] == 4 and r.pred_classes.max() < 10
        assert r.scores.shape == (len(r),)

    heads.train()
    targets = []
    for p in _proposals(2, 3, 64, seed=1):
        t = Instances(p.image_size)
        t.gt_boxes = p.proposal_boxes
        t.gt_classes = torch.tensor([1, 2, 3])
        targets.append(t)
    with EventStorage():  # the head logs sampling statistics, as inside a trainer
        _, losses = heads(images, features, proposals, targets)
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    sum(losses.values()).backward()
    assert heads.res5.norm.weight.grad is not None  # the extra norm is trained


def test_whole_model_uses_sync_bn_in_backbone_and_head(tmp_path):
    model = build_model(_c4_cfg(tmp_path))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and all(type(m) is NaiveSyncBatchNorm for m in norms)
    assert model.backbone.stem.conv1.norm in norms and model.roi_heads.res5.norm in norms
    # FREEZE_AT 0: no frozen BN, every norm is trainable.
    assert all(p.requires_grad for m in norms for p in m.parameters())


def test_fpn_norm_options_cover_new_layers():
    """FPN models: Detectron2's own NORM keys put sync BN in FPN, box head convs, mask head."""
    cfg = get_cfg()
    add_moco_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.MASK_ON",
            "True",
            "MODEL.BACKBONE.NAME",
            "build_resnet_fpn_backbone",
            "MODEL.RESNETS.DEPTH",
            "18",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "64",
            "MODEL.RESNETS.OUT_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.FPN.IN_FEATURES",
            "['res2','res3','res4','res5']",
            "MODEL.FPN.OUT_CHANNELS",
            "32",
            "MODEL.RPN.IN_FEATURES",
            "['p2','p3','p4','p5','p6']",
            "MODEL.ROI_HEADS.NAME",
            "StandardROIHeads",
            "MODEL.ROI_HEADS.IN_FEATURES",
            "['p2','p3','p4','p5']",
            "MODEL.ANCHOR_GENERATOR.SIZES",
            "[[32],[64],[128],[256],[512]]",
            "MODEL.ROI_BOX_HEAD.NAME",
            "FastRCNNConvFCHead",
            "MODEL.ROI_BOX_HEAD.NUM_CONV",
            "2",
            "MODEL.ROI_BOX_HEAD.NUM_FC",
            "1",
            "MODEL.ROI_BOX_HEAD.CONV_DIM",
            "32",
            "MODEL.ROI_BOX_HEAD.FC_DIM",
            "64",
            "MODEL.ROI_MASK_HEAD.NAME",
            "MaskRCNNConvUpsampleHead",
            "MODEL.ROI_MASK_HEAD.CONV_DIM",
            "32",
            "MODEL.ROI_MASK_HEAD.NUM_CONV",
            "4",
            "MODEL.RESNETS.NORM",
            "naiveSyncBN",
            "MODEL.FPN.NORM",
            "naiveSyncBN",
            "MODEL.ROI_BOX_HEAD.NORM",
            "naiveSyncBN",
            "MODEL.ROI_MASK_HEAD.NORM",
            "naiveSyncBN",
        ]
    )
    model = build_model(cfg)
    sync = lambda mod: [m for m in mod.modules() if type(m) is NaiveSyncBatchNorm]  # noqa: E731
    assert len(sync(model.backbone.bottom_up)) > 0
    assert (
        len(sync(model.backbone)) - len(sync(model.backbone.bottom_up)) == 8
    )  # 4 lateral + 4 output convs
    assert len(sync(model.roi_heads.box_head)) == 2
    assert len(sync(model.roi_heads.mask_head)) == 4


def test_keypoint_head_with_norm():
    """Detectron2's keypoint head has no norm option; ours adds one, "" keeps Detectron2's head."""
    cfg = get_cfg()
    add_moco_config(cfg)
    cfg.merge_from_list(
        [
            "MODEL.ROI_KEYPOINT_HEAD.NAME",
            "KRCNNConvDeconvUpsampleHeadNorm",
            "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
            "(16, 16)",
        ]
    )
    shape = ShapeSpec(channels=8, width=14, height=14)
    plain = build_keypoint_head(cfg, shape)
    assert not [m for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d)]

    cfg.MODEL.ROI_KEYPOINT_HEAD.NORM = "naiveSyncBN"
    head = build_keypoint_head(cfg, shape)
    order = [n for n, _ in head.named_children()]
    assert order[:4] == ["conv_fcn1", "conv_fcn_relu1", "conv_fcn2", "conv_fcn_relu2"]
    assert type(head.conv_fcn1.norm) is NaiveSyncBatchNorm and head.conv_fcn1.bias is None
    assert head.conv_fcn1.norm.weight.eq(1).all()  # norm starts as identity, not kaiming-filled
    out = head.layers(torch.randn(3, 8, 14, 14))
    assert out.shape == (3, cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS, 56, 56)
