"""Every ResNet depth and width Detectron2 builds converts, and the report names the config keys.

The printed ``MODEL.RESNETS.*`` keys are used as the config overrides below: if they were wrong,
the model would not load the file or would compute different features.
"""

import pytest
import torch

from convert import convert_checkpoint
from convert.mapping import MappingError
from detection.verify import VerifyError, compare_features, verify_converted
from tests.convert.convert_layouts import C4_CONFIG, FPN_CONFIG, random_resnet

R = "MODEL.RESNETS."
CASES = [  # (torchvision name, --target, the config keys the report must print)
    ("resnet34", "fpn", f"{R}DEPTH 34 {R}RES2_OUT_CHANNELS 64"),
    (
        "resnet101",
        "c4",
        f"{R}DEPTH 101 {R}RES2_OUT_CHANNELS 256 {R}NUM_GROUPS 1 {R}WIDTH_PER_GROUP 64",
    ),
    (
        "resnet152",
        "fpn",
        f"{R}DEPTH 152 {R}RES2_OUT_CHANNELS 256 {R}NUM_GROUPS 1 {R}WIDTH_PER_GROUP 64",
    ),
    (
        "wide_resnet50_2",
        "c4",
        f"{R}DEPTH 50 {R}RES2_OUT_CHANNELS 256 {R}NUM_GROUPS 1 {R}WIDTH_PER_GROUP 128",
    ),
    ("wide_resnet50_2", "fpn", f"{R}WIDTH_PER_GROUP 128"),
    (
        "resnext50_32x4d",
        "fpn",
        f"{R}DEPTH 50 {R}RES2_OUT_CHANNELS 256 {R}NUM_GROUPS 32 {R}WIDTH_PER_GROUP 4",
    ),
]


def _overrides(report):
    """ "MODEL.RESNETS.DEPTH 34 ..." -> ["MODEL.RESNETS.DEPTH", "34", ...]."""
    return report.detectron2_config.split()


@pytest.mark.parametrize("arch,target,keys", CASES)
def test_depth_converts_and_computes_torchvision_features(arch, target, keys, tmp_path):
    model = random_resnet(arch, seed=3)
    torch.save(model.state_dict(), tmp_path / f"{arch}.pth")
    report = convert_checkpoint(tmp_path / f"{arch}.pth", tmp_path / "out.pkl", target=target)
    assert keys in report.detectron2_config and keys in report.summary()
    config = C4_CONFIG if target == "c4" else FPN_CONFIG
    verified = verify_converted(report.output_path, config, _overrides(report))
    assert len(verified.loaded) == report.mapped_count and verified.missing_backbone == []
    result = compare_features(model, report.output_path, config, overrides=_overrides(report))
    assert result.ok and set(result.max_rel_diff) == {"res4", "res5"}


def test_without_the_printed_width_the_wide_resnet_does_not_load(tmp_path):
    model = random_resnet("wide_resnet50_2", seed=4)
    torch.save(model.state_dict(), tmp_path / "wide.pth")
    report = convert_checkpoint(tmp_path / "wide.pth", tmp_path / "wide.pkl", target="fpn")
    overrides = _overrides(report)
    overrides[overrides.index("MODEL.RESNETS.WIDTH_PER_GROUP") + 1] = "64"
    with pytest.raises(VerifyError, match="WRONG SHAPE"):
        verify_converted(report.output_path, FPN_CONFIG, overrides)


def test_basic_block_resnets_cannot_be_c4(tmp_path):
    torch.save(random_resnet("resnet34", seed=5).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(MappingError, match="Res5ROIHeads always builds"):
        convert_checkpoint(tmp_path / "r34.pth", tmp_path / "r34.pkl", target="c4")
    assert not (tmp_path / "r34.pkl").exists()
