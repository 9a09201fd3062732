"""detection.modeling.semantic_seg: the FCN head, the VOC 2012 segmentation datasets and the
training mapper.
"""

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_model
from PIL import Image

from detection.config_lookup import load_config
from detection.modeling import semantic_seg
from tests.detection import layouts


def fcn_cfg(num_classes=21):
    cfg = load_config(
        "voc12sem_R50_dilated_30k_random",
        [
            "MODEL.DEVICE",
            "cpu",
            "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
            str(num_classes),
            "MODEL.RESNETS.STEM_OUT_CHANNELS",
            "8",
            "MODEL.RESNETS.RES2_OUT_CHANNELS",
            "32",
            "MODEL.RESNETS.WIDTH_PER_GROUP",
            "8",
            "MODEL.SEM_SEG_HEAD.CONVS_DIM",
            "16",
        ],
    )
    return cfg


def test_fcn_head_is_the_papers_head_on_a_stride_16_dilated_r50():
    model = build_model(fcn_cfg())
    head = model.sem_seg_head
    assert isinstance(head, semantic_seg.FCNHead)
    convs = list(head.convs)
    assert len(convs) == 2
    assert all(
        c.kernel_size == (3, 3) and c.dilation == (6, 6) and c.norm is not None for c in convs
    )
    assert head.predictor.kernel_size == (1, 1) and head.predictor.out_channels == 21
    # res5 dilated at stride 1: output stride 16, dilation 2 in every res5 3x3 conv.
    assert model.backbone.output_shape()["res5"].stride == 16
    res5_dilations = {b.conv2.dilation for b in model.backbone.res5}
    assert res5_dilations == {(2, 2)}


def test_fcn_head_logits_cover_the_image_and_loss_ignores_255():
    torch.manual_seed(0)
    head = semantic_seg.FCNHead(
        ShapeSpec(channels=8, stride=16),
        in_feature="res5",
        num_classes=3,
        conv_dims=8,
        common_stride=16,
        norm="BN",
        ignore_value=255,
    )
    features = {"res5": torch.randn(2, 8, 5, 7)}  # an image padded to 72 x 100 -> 5 x 7
    head.eval()
    logits, _ = head(features)
    assert logits.shape == (2, 3, 80, 112)  # cropped to the image by sem_seg_postprocess
    head.train()
    targets = torch.full((2, 72, 100), 255, dtype=torch.long)
    targets[:, :10, :10] = 1
    _, losses = head(features, targets)
    loss = losses["loss_sem_seg"]
    assert torch.isfinite(loss) and loss > 0
    # Only the 200 labelled pixels count: the mean CE over them, from the same logits.
    ref = torch.nn.functional.cross_entropy(
        torch.nn.functional.interpolate(
            head.layers(features), scale_factor=16, mode="bilinear", align_corners=False
        )[:, :, :10, :10],
        targets[:, :10, :10],
    )
    assert torch.allclose(loss, ref, atol=1e-6)


def test_voc_sem_seg_datasets_read_the_real_layout(tmp_path):
    layouts.write_voc_sem_seg(tmp_path)
    try:
        semantic_seg.register_voc_sem_seg(str(tmp_path))
        val = DatasetCatalog.get("voc_2012_sem_seg_val")
        aug = DatasetCatalog.get("voc_2012_sem_seg_train_aug")
        assert len(val) == 2 and len(aug) == 3
        assert val[0]["sem_seg_file_name"].endswith(
            f"SegmentationClass/{val[0]['file_name'][-15:-4]}.png"
        )
        assert "SegmentationClassAug" in aug[0]["sem_seg_file_name"]
        meta = MetadataCatalog.get("voc_2012_sem_seg_val")
        assert meta.evaluator_type == "sem_seg" and meta.ignore_label == 255
        assert len(meta.stuff_classes) == 21 and meta.stuff_classes[0] == "background"
        # Palette PNGs read as class ids (PIL's grayscale conversion would give luminances).
        png = Image.open(val[0]["sem_seg_file_name"])
        assert png.mode == "P"
        ids = semantic_seg.read_label_png(val[0]["sem_seg_file_name"])
        assert set(np.unique(ids)) <= set(range(21)) | {255}
        assert set(np.unique(ids)) - {0, 255}
        assert not np.array_equal(ids, np.asarray(png.convert("L")))
    finally:
        semantic_seg.register_voc_sem_seg()  # back under $DETECTRON2_DATASETS


def test_missing_voc_split_says_what_to_get(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_aug.*SegmentationClassAug"):
        semantic_seg.load_voc_sem_seg(
            str(tmp_path / "VOC2012"), "train_aug", "SegmentationClassAug"
        )


def test_train_mapper_scales_then_crops_and_keeps_label_ids(tmp_path):
    layouts.write_voc_sem_seg(tmp_path)
    dicts = semantic_seg.load_voc_sem_seg(str(tmp_path / "VOC2012"), "train")
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TRAIN = (192,)  # 2x the 96-pixel short side
    cfg.INPUT.MAX_SIZE_TRAIN = 1000
    cfg.INPUT.CROP.ENABLED = True
    cfg.INPUT.CROP.TYPE = "absolute"
    cfg.INPUT.CROP.SIZE = (100, 120)
    out = semantic_seg.SemSegDatasetMapper(cfg)(dicts[0])
    # Crop after scaling: the crop size, not the scaled size (Detectron2's default mapper
    # crops first and would return 192 x 256 here).
    assert tuple(out["image"].shape) == (3, 100, 120)
    assert tuple(out["sem_seg"].shape) == (100, 120)
    source = set(np.unique(semantic_seg.read_label_png(dicts[0]["sem_seg_file_name"])))
    assert set(out["sem_seg"].unique().tolist()) <= source  # nearest-neighbour: no new ids


def test_sem_seg_train_loader_feeds_the_fcn_model(tmp_path):
    layouts.write_voc_sem_seg(tmp_path)
    try:
        semantic_seg.register_voc_sem_seg(str(tmp_path))
        cfg = fcn_cfg()
        cfg.merge_from_list(
            [
                "SOLVER.IMS_PER_BATCH",
                "2",
                "DATALOADER.NUM_WORKERS",
                "0",
                "INPUT.MIN_SIZE_TRAIN",
                "(64,)",
                "INPUT.MIN_SIZE_TRAIN_SAMPLING",
                "choice",
                "INPUT.CROP.SIZE",
                "(48, 64)",
            ]
        )
        batch = next(iter(semantic_seg.build_sem_seg_train_loader(cfg)))
        assert len(batch) == 2
        assert all(
            tuple(d["image"].shape) == (3, 48, 64) and tuple(d["sem_seg"].shape) == (48, 64)
            for d in batch
        )
        model = build_model(cfg)
        model.train()
        losses = model(batch)
        assert set(losses) == {"loss_sem_seg"} and torch.isfinite(losses["loss_sem_seg"])
    finally:
        semantic_seg.register_voc_sem_seg()


# ---------------------------------------------------------------------------------------------
# The paper's VOC scaling: a random ratio in [0.5, 2.0] of each image's own size (appendix A.5)


def _ratios(aug, h, w, draws, seed):
    np.random.seed(seed)
    out = []
    for _ in range(draws):
        t = aug.get_transform(np.zeros((h, w, 3), dtype=np.uint8))
        assert (t.h, t.w) == (h, w)
        out.append((t.new_h / h, t.new_w / w))
    return np.array(out)


@pytest.mark.parametrize("h, w", [(375, 500), (500, 333), (96, 128), (40, 40)])
def test_random_scale_ratio_is_relative_to_each_image(h, w):
    aug = semantic_seg.RandomScaleRatio(0.5, 2.0)
    r = _ratios(aug, h, w, 400, seed=0)
    tol = 1.0 / min(h, w)  # rounding to whole pixels
    assert np.all(np.abs(r[:, 0] - r[:, 1]) <= 2 * tol)  # aspect ratio kept
    assert r.min() >= 0.5 - tol and r.max() <= 2.0 + tol
    assert r.min() < 0.55 and r.max() > 1.95  # the whole range is used, uniformly
    assert abs(np.median(r[:, 0]) - 1.25) < 0.1
    # The same draws on a 500x375 image: the ratio does not depend on the image's size.
    ref = _ratios(aug, 375, 500, 400, seed=0)
    assert np.all(np.abs(r[:, 0] - ref[:, 0]) <= tol + 1.0 / 375)


def test_voc_config_scales_by_ratio_and_cityscapes_by_short_side():
    from detectron2.data import transforms as T

    voc = semantic_seg.sem_seg_train_augmentations(load_config("voc12sem_R50_dilated_30k_moco"))
    assert isinstance(voc[0], semantic_seg.RandomScaleRatio)
    assert (voc[0].min_ratio, voc[0].max_ratio) == (0.5, 2.0)
    assert [type(a) for a in voc[1:]] == [T.RandomCrop, T.RandomFlip]
    city_cfg = load_config("cityscapessem_R50_dilated_90k_moco")
    city = semantic_seg.sem_seg_train_augmentations(city_cfg)
    assert isinstance(city[0], T.ResizeShortestEdge)


def test_random_scale_ratio_resizes_labels_with_nearest(tmp_path):
    layouts.write_voc_sem_seg(tmp_path)
    dicts = semantic_seg.load_voc_sem_seg(str(tmp_path / "VOC2012"), "train")
    cfg = fcn_cfg()
    cfg.merge_from_list(["INPUT.CROP.ENABLED", "False", "INPUT.RANDOM_FLIP", "none"])
    mapper = semantic_seg.SemSegDatasetMapper(cfg)
    image = np.asarray(Image.open(dicts[0]["file_name"]))
    source = set(np.unique(semantic_seg.read_label_png(dicts[0]["sem_seg_file_name"])))
    np.random.seed(1)
    for _ in range(5):
        out = mapper(dicts[0])
        ratio = out["image"].shape[1] / image.shape[0]
        assert 0.5 - 0.02 <= ratio <= 2.0 + 0.02
        assert abs(out["image"].shape[2] / image.shape[1] - ratio) < 0.03
        assert tuple(out["sem_seg"].shape) == tuple(out["image"].shape[1:])
        assert set(out["sem_seg"].unique().tolist()) <= source


def test_random_scale_ratio_rejects_a_bad_range():
    with pytest.raises(ValueError, match="min_ratio <= max_ratio"):
        semantic_seg.RandomScaleRatio(2.0, 0.5)
