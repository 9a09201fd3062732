"""Converted weights load into our Detectron2 models and compute torchvision's features.

Configs are our MoCo task YAMLs (configs/*_moco.yaml), loaded through ``detection.config``.
"""

import pytest
import torch

from convert import convert_checkpoint
from detection.verify import (
    VerifyError,
    compare_features,
    config_problems,
    load_detection_config,
    torchvision_reference,
    verify_converted,
)
from tests.convert.convert_layouts import C4_CONFIG, FPN_CONFIG, R18_OVERRIDES

C4_NEW_LAYERS = ("proposal_generator.", "roi_heads.box_predictor.", "roi_heads.res5.norm.")
FPN_NEW_LAYERS = (
    "backbone.fpn_",
    "proposal_generator.",
    "roi_heads.box_head.",
    "roi_heads.box_predictor.",
    "roi_heads.mask_head.",
)


@pytest.mark.parametrize("target", ["c4", "heuristic"])
def test_c4_weights_fill_every_backbone_tensor_of_the_c4_model(r50_converted, target):
    report = verify_converted(r50_converted[target].output_path, C4_CONFIG)
    assert report.ok and report.missing_backbone == [] and report.unexpected == []
    assert len(report.loaded) == r50_converted[target].mapped_count == 265
    assert any(n.startswith("roi_heads.res5.0.") for n in report.loaded)  # res5 from the ROI head
    assert all(n.startswith(C4_NEW_LAYERS) for n in report.missing_new), report.missing_new
    assert any(n.startswith("roi_heads.res5.norm.") for n in report.missing_new)  # the extra norm


def test_fpn_weights_fill_every_backbone_tensor_of_the_fpn_model(r50_converted):
    report = verify_converted(r50_converted["fpn"].output_path, FPN_CONFIG)
    assert report.ok and report.missing_backbone == [] and report.unexpected == []
    assert len(report.loaded) == 265
    assert all(n.startswith("backbone.bottom_up.") for n in report.loaded)
    assert all(n.startswith(FPN_NEW_LAYERS) for n in report.missing_new), report.missing_new
    assert "backbone.bottom_up.res2" in report.table()


@pytest.mark.parametrize(
    "target,config,norm",
    [
        ("c4", C4_CONFIG, "naiveSyncBN"),  # as the config sets it; res5 comes from roi_heads.res5
        ("fpn", FPN_CONFIG, "FrozenBN"),
        (
            "heuristic",
            C4_CONFIG,
            "BN",
        ),  # Detectron2's suffix matching puts res5 into the ROI head too
    ],
)
def test_detectron2_computes_torchvision_features(r50, r50_converted, target, config, norm):
    result = compare_features(
        r50, r50_converted[target].output_path, config, overrides=["MODEL.RESNETS.NORM", norm]
    )
    assert result.ok and set(result.max_rel_diff) == {"res4", "res5"}
    assert max(result.max_rel_diff.values()) < 1e-4


def test_wrong_stride_placement_is_caught(r50, r50_converted):
    # Same shapes, so the weights load; only the features (and the config check) reveal it.
    overrides = ["MODEL.RESNETS.STRIDE_IN_1X1", "True"]
    with pytest.raises(VerifyError, match="different features"):
        compare_features(r50, r50_converted["c4"].output_path, C4_CONFIG, overrides=overrides)
    errors, _ = config_problems(load_detection_config(C4_CONFIG, overrides))
    assert "set MODEL.RESNETS.STRIDE_IN_1X1 False" in errors[0]
    # The supervised config is for MSRA weights: BGR, caffe mean/std, stride in the 1x1.
    errors, warnings = config_problems(load_detection_config("voc0712_R50_C4_24k_supervised"))
    assert errors and "RGB" in warnings[0] and "PIXEL_MEAN" in warnings[1]


def test_weights_for_another_meta_architecture_fail_with_missing_backbone_tensors(r50_converted):
    with pytest.raises(VerifyError, match="MISSING \\(backbone\\)") as err:
        verify_converted(r50_converted["c4"].output_path, FPN_CONFIG)
    assert "holds ResNet-50 for a C4 model (--target c4)" in str(err.value)


def test_resnet18_fpn_as_in_the_demo(r18, tmp_path):
    torch.save({"state_dict": r18.state_dict()}, tmp_path / "r18.pth")
    report = convert_checkpoint(tmp_path / "r18.pth", tmp_path / "r18_fpn.pkl", target="fpn")
    verified = verify_converted(report.output_path, FPN_CONFIG, R18_OVERRIDES)
    assert len(verified.loaded) == report.mapped_count
    reference = torchvision_reference(r18.state_dict())
    assert compare_features(reference, report.output_path, FPN_CONFIG, overrides=R18_OVERRIDES).ok
    with pytest.raises(VerifyError, match="WRONG SHAPE") as err:  # an R18 file in an R50 model
        verify_converted(report.output_path, FPN_CONFIG)
    assert "holds ResNet-18 for an FPN model" in str(err.value)
    assert "MODEL.RESNETS.DEPTH 50" in str(err.value)


def test_dc5_target_fills_the_dilated_backbone(r50, moco_r50_file, tmp_path):
    report = convert_checkpoint(moco_r50_file, tmp_path / "r50_dc5.pkl", target="dc5")
    verified = verify_converted(report.output_path, "voc0712_R50_DC5_24k_moco")
    assert verified.missing_backbone == [] and len(verified.loaded) == 265
    assert any(n.startswith("backbone.res5.") for n in verified.loaded)
    # The paper's 512-channel neck after res5 (detection.modeling.dc5_neck) is the one new part of
    # the backbone: the ResNet inside keeps the names --target dc5 writes.
    assert {n for n in verified.missing_new if n.startswith("backbone.")} == {
        "backbone.neck.weight",
        "backbone.neck.norm.weight",
        "backbone.neck.norm.bias",
        "backbone.neck.norm.running_mean",
        "backbone.neck.norm.running_var",
    }
    # The dilated res5 has no torchvision twin: only res4 is compared (OUT_FEATURES is res5 only).
    result = compare_features(r50, report.output_path, "voc0712_R50_DC5_24k_moco")
    assert set(result.max_rel_diff) == {"res4"} and result.ok
