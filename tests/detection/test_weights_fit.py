"""No run trains from random init by accident: weights converted for one architecture's names and
given to another config are refused before training, with the convert command for this config.

Real conversions (``convert.convert_checkpoint`` of a MoCo v2 checkpoint) of a narrow ResNet-50
(torchvision's ``width_per_group=8``: every layer of R50, bottlenecks 8x thinner) for each target,
loaded by Detectron2's own checkpointer into each config's real model (built on CPU).
"""

import pickle

import pytest
import torch
from torchvision.models.resnet import Bottleneck, ResNet

from convert import convert_checkpoint
from detection import checks
from detection.config_lookup import load_config

CONFIGS = {  # config kind -> (our config, the --target its model needs)
    "C4": ("voc0712_R50_C4_24k_moco", "c4"),
    "FPN": ("coco_R50_FPN_1x_moco", "fpn"),
    "DC5": ("voc0712_R50_DC5_24k_moco", "dc5"),
    "FCN": ("voc12sem_R50_dilated_30k_moco", "dc5"),
}
NARROW = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "8",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "64",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "16",
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "16",
]
TARGETS = ("c4", "fpn", "dc5", "heuristic")


@pytest.fixture(scope="module")
def moco_file(tmp_path_factory):
    torch.manual_seed(0)
    net = ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=8)
    path = tmp_path_factory.mktemp("moco") / "moco_v2_narrow.pth.tar"
    state = {"module.encoder_q." + k: v for k, v in net.state_dict().items()}
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, path)
    return path


@pytest.fixture(scope="module")
def converted(moco_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("converted")
    return {
        t: str(convert_checkpoint(moco_file, out / f"narrow_{t}.pkl", target=t).output_path)
        for t in TARGETS
    }


def _cfg(kind, weights, tmp_path):
    return load_config(
        CONFIGS[kind][0], NARROW + ["MODEL.WEIGHTS", weights, "OUTPUT_DIR", str(tmp_path / "out")]
    )


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("target", TARGETS)
def test_every_mix_up_is_refused_and_every_fit_accepted(
    kind, target, converted, tmp_path, one_thread
):
    cfg = _cfg(kind, converted[target], tmp_path)
    needed = CONFIGS[kind][1]
    if target in (needed, "heuristic"):  # heuristic: Detectron2's suffix matching places them
        fit = checks.check_weights_fit(cfg)
        assert fit.ok and len(fit.backbone_names) == 265, (fit.missing[:3], len(fit.backbone_names))
        return
    with pytest.raises(checks.WeightsError) as e:
        checks.check_weights_fit(cfg)
    msg = str(e.value)
    assert "\n" not in msg  # one line
    assert "backbone tensors of this config's model at random init" in msg
    assert f"the file holds names for --target {target}" in msg
    assert (
        f"Fix: python tools/convert.py moco_v2_narrow.pth.tar moco_v2_narrow_{needed}.pkl "
        f"--target {needed}"
    ) in msg
    # How many: C4 <-> DC5 share res2-res4 under backbone., so only res5 (3 blocks, one
    # shortcut) is missing there.
    missing = int(msg.split("would leave ")[1].split(" of ")[0])
    shared = {("c4", "dc5"), ("dc5", "c4")}
    expected = 3 * 15 + 5 if (target, needed) in shared else 265
    assert missing == expected, msg


def test_a_file_with_one_stage_missing_is_refused(converted, tmp_path, one_thread):
    with open(converted["c4"], "rb") as f:
        data = pickle.load(f)  # our own file, written by the test's conversion
    dropped = [k for k in data["model"] if k.startswith("backbone.res4.")]
    data["model"] = {k: v for k, v in data["model"].items() if k not in dropped}
    partial = tmp_path / "partial_c4.pkl"
    with open(partial, "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(
        checks.WeightsError,
        match=rf"would leave {len(dropped)} of 265 backbone tensors .* "
        r"e\.g\. backbone\.res4\.0\..*--target c4",
    ):
        checks.check_weights_fit(_cfg("C4", str(partial), tmp_path))
    assert len(dropped) == 6 * 3 * 5 + 5  # 6 blocks x 3 convs x (weight + 4 BN), one shortcut


def test_wrong_depth_is_a_shape_mismatch(converted, tmp_path, one_thread):
    cfg = _cfg("FPN", converted["fpn"], tmp_path)
    cfg.MODEL.RESNETS.WIDTH_PER_GROUP = 16  # the file's bottlenecks are 8 wide
    with pytest.raises(checks.WeightsError) as e:
        checks.check_weights_fit(cfg)
    msg = str(e.value)
    # Same names, other shapes in each of the 16 bottlenecks: conv1 and conv2 with their BNs
    # (4 tensors each), and conv3's input: 11 tensors; the stem, conv3's BN, shortcuts fit.
    assert f"would leave {16 * 11} of 265 backbone tensors" in msg
    assert (
        f"({16 * 11} of them with the wrong shape, e.g. backbone.bottom_up.res2.0.conv1.weight:"
        " (8, 64, 1, 1) in the file, (16, 64, 1, 1) in the model)"
    ) in msg
    assert "the names fit (--target fpn), but the file holds ResNet-50 with other widths" in msg
    assert "WIDTH_PER_GROUP 16" in msg and "\n" not in msg


def test_random_init_and_model_zoo_urls_are_not_read(tmp_path):
    cfg = _cfg("C4", "", tmp_path)
    assert checks.check_weights_fit(cfg) is None  # random init: nothing to compare
    cfg.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    assert checks.check_weights_fit(cfg) is None  # Detectron2's own catalog, not downloaded
