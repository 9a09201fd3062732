"""Each SSL codebase's checkpoint is detected without --source, converted, and computes the
source ResNet's res4/res5 features in Detectron2; the dropped groups are listed by name."""

import pytest
import torch

from convert import ConversionError, UnknownLayoutError, convert_checkpoint
from convert.mapping import MappingError
from detection.verify import compare_features, torchvision_reference
from tests.convert.convert_layouts import C4_CONFIG, FPN_CONFIG, R18_OVERRIDES
from tests.convert.ssl_layouts import (
    backbone_only,
    barlowtwins,
    byol,
    densecl,
    dino,
    lightly,
    mmselfsup,
    mmselfsup_v0,
    pixpro,
    simsiam,
    sololearn,
    swav,
    timm,
    vicreg,
    vissl,
)
from tests.convert.test_convert_sources import _assert_holds

OUTSIDE = "outside the selected ResNet"

# case: (builder, detected layout, reasons that must be listed for the dropped groups)
CASES = {
    "swav": (swav, "swav", ["SwAV projection head", "SwAV prototypes"]),
    "swav_released": (lambda m: swav(m, released=True), "swav", ["SwAV prototypes"]),
    "simsiam": (simsiam, "simsiam", ["SimSiam predictor", "classifier/projection head"]),
    "barlowtwins": (barlowtwins, "barlowtwins", ["Barlow Twins projector", "affine-free BN"]),
    "vicreg": (vicreg, "vicreg", ["VICReg projector"]),
    "released_backbone": (backbone_only, "torchvision", []),
    "dino": (dino, "dino", ["DINO projection head", "DINO student"]),
    "dino_teacher_without_ddp": (lambda m: dino(m, teacher_ddp=False), "dino", ["DINO student"]),
    "byol": (byol, "byol", ["BYOL projector", "BYOL predictor", "momentum", "alias"]),
    "densecl": (
        densecl,
        "densecl",
        ["DenseCL neck", "key (momentum) encoder", "alias", "DenseCL queues"],
    ),
    "pixpro": (
        pixpro,
        "pixpro",
        [
            "PixPro pixel projector",
            "PixPro instance predictor",
            "PixPro pixel-propagation transform",
            "momentum",
        ],
    ),
    "mmselfsup": (
        mmselfsup,
        "mmselfsup",
        ["mmselfsup neck", "momentum encoder", "data preprocessor", "queue"],
    ),
    "mmselfsup_v0": (
        mmselfsup_v0,
        "mmselfsup",
        ["mmselfsup neck", "alias of backbone + neck", "key (momentum) encoder", "queue"],
    ),
    "sololearn": (
        sololearn,
        "sololearn",
        ["online linear classifier", "projection head", "predictor head", "momentum"],
    ),
    "vissl": (vissl, "vissl", ["VISSL heads"]),
    "lightly_backbone": (lightly, "lightly", []),
    "lightly_simclr": (lambda m: lightly(m, "simclr"), "lightly", ["lightly projection head"]),
    "lightly_moco": (
        lambda m: lightly(m, "moco"),
        "lightly",
        ["momentum", "lightly momentum projection"],
    ),
    "timm": (timm, "timm", ["timm EMA copy", "classifier/projection head"]),
}


def _convert(obj, tmp_path, name="out", **kwargs):
    path = tmp_path / "checkpoint.pth"
    if not path.exists():
        torch.save(obj, path)
    return convert_checkpoint(path, tmp_path / f"{name}.pkl", **kwargs)


@pytest.mark.parametrize("case", CASES)
def test_layout_is_detected_and_converts_to_the_same_features(case, r18, tmp_path):
    build, layout, reasons = CASES[case]
    obj, expected = build(r18)
    report = _convert(obj, tmp_path, target="fpn")
    assert report.source_format == layout
    _assert_holds(report.output_path, expected[None], "fpn")
    dropped = {why for _, why in report.dropped}
    for reason in reasons:
        assert any(reason in why for why in dropped), (reason, dropped)
    # A file written as the codebase writes it has no tensor the layout cannot account for.
    assert not any(why.startswith(OUTSIDE) for why in dropped), dropped
    assert "MODEL.RESNETS.DEPTH 18 MODEL.RESNETS.RES2_OUT_CHANNELS 64" in report.summary()
    result = compare_features(
        torchvision_reference(expected[None]),
        report.output_path,
        FPN_CONFIG,
        overrides=R18_OVERRIDES,
    )
    assert result.ok and set(result.max_rel_diff) == {"res4", "res5"}


MOMENTUM_CASES = ["byol", "densecl", "pixpro", "sololearn", "lightly_moco", "timm"]


@pytest.mark.parametrize("case", MOMENTUM_CASES)
def test_momentum_encoder_flag_converts_the_momentum_copy(case, r18, tmp_path):
    obj, expected = CASES[case][0](r18)
    online = _convert(obj, tmp_path, "online", target="fpn")
    momentum = _convert(obj, tmp_path, "momentum", target="fpn", momentum_encoder=True)
    _assert_holds(online.output_path, expected[None], "fpn")
    _assert_holds(momentum.output_path, expected["momentum"], "fpn")
    # The online network is now a dropped group, listed as such.
    assert any(
        "online" in why or "query" in why or "converted unless" in why
        for _, why in momentum.dropped
    )


def test_dino_teacher_by_default_student_on_request_with_features(r50, tmp_path):
    """DINO's ResNet-50, as its full checkpoint holds it (args is an argparse.Namespace)."""
    obj, expected = dino(r50)
    teacher = _convert(obj, tmp_path, "teacher", target="c4")
    student = _convert(obj, tmp_path, "student", target="c4", student=True)
    _assert_holds(teacher.output_path, expected[None], "c4")
    _assert_holds(student.output_path, expected["student"], "c4")
    assert "args" in teacher.other_entries and "dino_loss" in teacher.other_entries
    assert any("DINO teacher" in why for _, why in student.dropped)
    assert (
        "MODEL.RESNETS.DEPTH 50 MODEL.RESNETS.RES2_OUT_CHANNELS 256 MODEL.RESNETS.NUM_GROUPS 1"
        " MODEL.RESNETS.WIDTH_PER_GROUP 64"
    ) in teacher.summary()
    for report, state in ((teacher, expected[None]), (student, expected["student"])):
        assert compare_features(torchvision_reference(state), report.output_path, C4_CONFIG).ok
    (tmp_path / "swav").mkdir()
    with pytest.raises(ConversionError, match="--student applies to DINO"):
        _convert(swav(r50)[0], tmp_path / "swav", student=True)


def test_forced_source_is_used_and_a_wrong_one_is_refused(r18, tmp_path):
    obj, expected = simsiam(r18)
    report = _convert(obj, tmp_path, "forced", target="fpn", source="simsiam")
    assert report.source_format == "simsiam"
    _assert_holds(report.output_path, expected[None], "fpn")
    with pytest.raises(UnknownLayoutError, match=r"no tensors left .* moco .*encoder\.conv1"):
        _convert(obj, tmp_path, "wrong", target="fpn", source="moco")
    with pytest.raises(MappingError, match="do not contain a ResNet stem"):  # no ResNet at the root
        _convert(obj, tmp_path, "wrong2", target="fpn", source="torchvision")
    assert not (tmp_path / "wrong.pkl").exists() and not (tmp_path / "wrong2.pkl").exists()


def test_momentum_flag_on_a_layout_without_one_is_refused(r18, tmp_path):
    with pytest.raises(ConversionError, match="--momentum-encoder applies to MoCo and the other"):
        _convert(swav(r18)[0], tmp_path, target="fpn", momentum_encoder=True)
    assert not (tmp_path / "out.pkl").exists()


def test_unknown_layout_lists_every_known_layout(tmp_path):
    torch.save({"state_dict": {"student_net.blocks.0.weight": torch.zeros(2)}}, tmp_path / "x.pth")
    with pytest.raises(UnknownLayoutError) as err:
        convert_checkpoint(tmp_path / "x.pth", tmp_path / "x.pkl")
    for name in (
        "swav",
        "simsiam",
        "barlowtwins",
        "vicreg",
        "dino",
        "byol",
        "densecl",
        "pixpro",
        "mmselfsup",
        "sololearn",
        "vissl",
        "lightly",
        "timm",
        "torchvision",
        "student_net.blocks.* (1)",
    ):
        assert name in str(err.value)


def test_cli_dino_teacher_student_and_the_printed_report(r18, tmp_path, capsys):
    from detection.cli.convert import main

    obj, expected = dino(r18)
    torch.save(obj, tmp_path / "dino_full.pth")
    src = str(tmp_path / "dino_full.pth")
    assert main([src, str(tmp_path / "t.pkl"), "--target", "fpn"]) == 0
    printed = capsys.readouterr().out
    assert "source: dino, ResNet-18" in printed and "DINO projection head" in printed
    assert (
        "also in the file, not weights (not converted): optimizer, epoch, args, dino_loss"
        in printed
    )
    assert (
        "Detectron2 config for this file: MODEL.RESNETS.DEPTH 18 "
        "MODEL.RESNETS.RES2_OUT_CHANNELS 64" in printed
    )
    assert main([src, str(tmp_path / "t2.pkl"), "--target", "fpn", "--teacher"]) == 0
    assert main([src, str(tmp_path / "s.pkl"), "--target", "fpn", "--student"]) == 0
    _assert_holds(tmp_path / "t.pkl", expected[None], "fpn")
    _assert_holds(tmp_path / "t2.pkl", expected[None], "fpn")
    _assert_holds(tmp_path / "s.pkl", expected["student"], "fpn")
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: the two exclude each other
        main([src, str(tmp_path / "x.pkl"), "--teacher", "--student"])
