"""Config lookup by name, our keys, overrides, and DensePose configs without DensePose installed."""

import sys

import pytest
import torch
from detectron2.config import get_cfg

from detection import config_lookup as dconfig
from detection.cli.train_net import UsageError, argument_parser, num_processes
from detection.config import add_moco_config
from detection.config_lookup import load_config, resolve_config_path
from detection.densepose import INSTALL_COMMAND, DensePoseMissingError
from tests.detection.tiny_detection import write_tiny_c4_config


@pytest.fixture
def config_dir(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    (folder / "pretrain").mkdir(parents=True)
    write_tiny_c4_config(folder, "voc_R50_C4_24k_moco.yaml")
    (folder / "pretrain" / "moco_v2_demo.yaml").write_text("epochs: 1\n")
    monkeypatch.setattr(dconfig, "CONFIG_DIR", str(folder))
    return folder


def test_config_dir_is_the_repo_configs_folder():
    import os

    assert os.path.basename(dconfig.CONFIG_DIR) == "configs"
    assert os.path.isdir(os.path.join(os.path.dirname(dconfig.CONFIG_DIR), "detection"))


def test_bare_names_resolve_under_configs(config_dir):
    expected = str(config_dir / "voc_R50_C4_24k_moco.yaml")
    assert resolve_config_path("voc_R50_C4_24k_moco.yaml") == expected
    assert resolve_config_path("voc_R50_C4_24k_moco") == expected
    assert resolve_config_path("moco_v2_demo") == str(config_dir / "pretrain" / "moco_v2_demo.yaml")
    assert resolve_config_path(expected) == expected  # a path stays a path


def test_unknown_name_lists_close_matches(config_dir):
    with pytest.raises(FileNotFoundError, match="did you mean: voc_R50_C4_24k_moco.yaml"):
        resolve_config_path("voc_R50_C4_24K_moco")


def test_load_config_merges_file_then_overrides_unfrozen(config_dir):
    cfg = load_config(
        "voc_R50_C4_24k_moco", ["SOLVER.MAX_ITER", "7", "MOCO.DATASET_ROOT_HINT", "x"]
    )
    assert cfg.MODEL.ROI_HEADS.NAME == "Res5ROIHeadsExtraNorm"  # from the file
    assert cfg.MODEL.ROI_HEADS.NUM_CLASSES == 10
    assert cfg.MODEL.RPN.POST_NMS_TOPK_TEST == 20
    assert cfg.SOLVER.MAX_ITER == 7 and cfg.MOCO.DATASET_ROOT_HINT == "x"
    assert not cfg.is_frozen()
    with pytest.raises(ValueError, match="KEY VALUE pairs"):
        load_config("voc_R50_C4_24k_moco", ["SOLVER.MAX_ITER"])


def test_add_moco_config_is_idempotent_and_keeps_values():
    cfg = add_moco_config(get_cfg())
    cfg.MOCO.DATASET_ROOT_HINT = "kept"
    add_moco_config(cfg)
    assert cfg.MOCO.DATASET_ROOT_HINT == "kept" and cfg.MODEL.ROI_KEYPOINT_HEAD.NORM == ""


def test_densepose_config_without_densepose_says_what_to_install(tmp_path, monkeypatch):
    # DensePose is not installed here; None in sys.modules makes `import densepose` fail
    # the same way on a machine where it is.
    monkeypatch.setitem(sys.modules, "densepose", None)
    base = tmp_path / "Base-DensePose-RCNN-FPN.yaml"
    base.write_text("MODEL:\n  ROI_DENSEPOSE_HEAD:\n    NAME: DensePoseV1ConvXHead\n")
    child = tmp_path / "coco_dp_R50_FPN_s1x_moco.yaml"  # name does not say densepose: its base does
    child.write_text(f'_BASE_: "{base.name}"\nSOLVER:\n  MAX_ITER: 1\n')
    for path in (base, child):
        with pytest.raises(DensePoseMissingError) as e:
            load_config(str(path))
        assert INSTALL_COMMAND in str(e.value) and "DensePose configs need" in str(e.value)


def test_command_line_is_detectron2s_plus_config_alias_and_cpu_num_gpus():
    parser = argument_parser()
    args = parser.parse_args(
        [
            "--config",
            "voc0712_R50_C4_24k_moco",
            "--resume",
            "--num-gpus",
            "auto",
            "--dist-url",
            "auto",
            "SOLVER.MAX_ITER",
            "10",
        ]
    )
    assert args.config_file == "voc0712_R50_C4_24k_moco" and args.resume and args.dist_url == "auto"
    assert args.opts == ["SOLVER.MAX_ITER", "10"]
    assert parser.parse_args(["--config-file", "x.yaml"]).num_gpus == 1  # Detectron2's default
    gpus = torch.cuda.device_count()
    assert num_processes(args) == max(gpus, 1)
    assert num_processes(parser.parse_args(["--num-gpus", "0"])) == 1  # one process, on CPU
    if not gpus:  # without GPUs, N means N gloo processes
        assert num_processes(parser.parse_args(["--num-gpus", "3"])) == 3
    else:
        with pytest.raises(UsageError, match="GPU"):
            num_processes(parser.parse_args(["--num-gpus", str(gpus + 1)]))
    for bad in ("-1", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--num-gpus", bad])
