"""Each pre-flight check in detection.checks fails with a message that says what and how to fix."""

import os
import pickle
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_pascal_voc

from convert.writer import write_detectron2_weights
from detection import checks
from detection.config_lookup import load_config
from detection.data.datasets import DIGIT_CLASSES, register_demo_datasets
from pretrain.io import UnsafeCheckpointError
from tests.detection.tiny_detection import write_tiny_c4_config


@pytest.fixture
def cfg(tmp_path, tiny_demo_data):
    register_demo_datasets(tiny_demo_data["root"])
    return load_config(write_tiny_c4_config(tmp_path), ["OUTPUT_DIR", str(tmp_path / "out")])


def _register_voc(name, dirname):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    register_pascal_voc(name, dirname, "trainval", 2007, class_names=DIGIT_CLASSES)
    MetadataCatalog.get(name).evaluator_type = "pascal_voc"


def test_a_complete_config_passes(cfg):
    checks.run_checks(cfg)


def test_builtin_dataset_missing_names_dataset_path_env_and_download(cfg, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2data"))
    cfg.DATASETS.TRAIN = ("voc_2007_trainval",)  # Detectron2's builtin, under ./datasets at import
    with pytest.raises(checks.DatasetNotFoundError) as e:
        checks.run_checks(cfg)
    msg = str(e.value)
    assert "dataset 'voc_2007_trainval': missing /" in msg and os.sep + "VOC2007" in msg
    assert f"DETECTRON2_DATASETS={tmp_path / 'd2data'}" in msg and "host.robots.ox.ac.uk" in msg
    assert "datasets/README.md" in msg  # the expected layout

    cfg.DATASETS.TRAIN = ("coco_2017_train",)
    with pytest.raises(
        checks.DatasetNotFoundError, match=r"instances_train2017\.json.*\n.*\n.*\n.*cocodataset"
    ):
        checks.run_checks(cfg)
    cfg.DATASETS.TRAIN = ("cityscapes_fine_sem_seg_train",)
    with pytest.raises(checks.DatasetNotFoundError, match="csCreateTrainIdLabelImgs"):
        checks.run_checks(cfg)


def test_partly_extracted_voc_and_hint(cfg, tiny_demo_data, tmp_path):
    voc = tmp_path / "VOC2007"
    shutil.copytree(tiny_demo_data["voc_root"], voc)
    first = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    (voc / "JPEGImages" / f"{first}.jpg").unlink()
    _register_voc("partial_voc_trainval", str(voc))
    cfg.DATASETS.TRAIN = ("partial_voc_trainval",)
    cfg.MOCO.DATASET_ROOT_HINT = "the lab copy is in /shared/datasets"
    with pytest.raises(checks.DatasetNotFoundError) as e:
        checks.run_checks(cfg)
    assert f"{first}.jpg" in str(e.value) and "Hint: the lab copy is in /shared/datasets" in str(
        e.value
    )
    # The test set alone is what --eval-only needs.
    checks.run_checks(cfg, eval_only=True)


def test_unregistered_dataset_suggests_names(cfg):
    cfg.DATASETS.TEST = ("digits_voc_tset",)
    with pytest.raises(
        checks.DatasetNotFoundError, match="not registered; close names: digits_voc_test"
    ):
        checks.run_checks(cfg)


def test_demo_datasets_missing_say_make_data(cfg, tmp_path, monkeypatch):
    monkeypatch.delenv("DEMO_DATA", raising=False)
    register_demo_datasets(str(tmp_path / "nowhere"))
    with pytest.raises(
        checks.DatasetNotFoundError, match="DEMO_DATA is unset, so ./data(.|\n)*make data"
    ):
        checks.run_checks(cfg)


@pytest.mark.parametrize("weights", ["REPLACE_ME/moco_v2_800ep.pkl", "/path/to/converted.pkl"])
def test_placeholder_weights(cfg, weights):
    cfg.MODEL.WEIGHTS = weights
    with pytest.raises(
        checks.WeightsError, match="still a placeholder(.|\n)*Fix: convert the MoCo checkpoint"
    ):
        checks.run_checks(cfg)


def test_missing_weights_file(cfg, tmp_path):
    cfg.MODEL.WEIGHTS = str(tmp_path / "moco.pkl")
    with pytest.raises(checks.WeightsError, match="file not found.*moco.pkl"):
        checks.run_checks(cfg)


def _converted(tmp_path):
    import torch

    path = str(tmp_path / "moco_converted.pkl")
    write_detectron2_weights(
        {"stem.conv1.weight": torch.zeros(64, 3, 7, 7)},
        path,
        matching_heuristics=True,
        source={"file": "moco_v2.pth.tar", "sha256": "0" * 64, "format": "moco"},
    )
    return path


def _weights_and_pixel_checks(cfg):
    """run_checks' weights part without the backbone check (test_weights_fit.py tests that one):
    the one-tensor files here are about pixel formats, and run_checks refuses them as partial."""
    checks.check_pixel_format(cfg, checks.check_weights_path(cfg.MODEL.WEIGHTS, cfg))


def test_moco_weights_need_rgb_torchvision_stats(cfg, tmp_path):
    cfg.MODEL.WEIGHTS = _converted(tmp_path)
    _weights_and_pixel_checks(cfg)  # the tiny config is MoCo-style: RGB, torchvision mean/std
    with pytest.raises(checks.WeightsError, match="would leave 264 of 265 backbone tensors"):
        checks.run_checks(cfg)  # one tensor of ResNet-50: the rest would be random init

    for key, value, shown in [
        ("INPUT.FORMAT", "BGR", "INPUT.FORMAT: config has 'BGR'"),
        ("MODEL.PIXEL_MEAN", [103.530, 116.280, 123.675], "MODEL.PIXEL_MEAN"),
        ("MODEL.RESNETS.STRIDE_IN_1X1", True, "STRIDE_IN_1X1: config has True"),
    ]:
        bad = cfg.clone()
        bad.merge_from_list([key, str(value)])
        with pytest.raises(checks.WeightsError) as e:
            _weights_and_pixel_checks(bad)
        msg = str(e.value)
        assert shown in msg and "moco-transfer" in msg and "moco_v2.pth.tar" in msg
        assert "INPUT.FORMAT RGB MODEL.PIXEL_MEAN [123.675,116.28,103.53]" in msg


def test_msra_weights_need_bgr(cfg, tmp_path):
    path = tmp_path / "R-50.pkl"  # a Caffe2 model-zoo pickle: blobs, no __author__
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}}, f)
    cfg.MODEL.WEIGHTS = str(path)
    with pytest.raises(
        checks.WeightsError, match="Caffe2 model-zoo pickle(.|\n)*INPUT.FORMAT: config has 'RGB'"
    ):
        checks.run_checks(cfg)
    cfg.merge_from_list(
        [
            "INPUT.FORMAT",
            "BGR",
            "MODEL.PIXEL_MEAN",
            "[103.530, 116.280, 123.675]",
            "MODEL.PIXEL_STD",
            "[1.0, 1.0, 1.0]",
            "MODEL.RESNETS.STRIDE_IN_1X1",
            "True",
        ]
    )
    _weights_and_pixel_checks(cfg)
    # Model-zoo URLs are judged by name, without downloading.
    cfg.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    checks.run_checks(cfg)
    cfg.INPUT.FORMAT = "RGB"
    with pytest.raises(checks.WeightsError, match="MSRA"):
        checks.run_checks(cfg)


def test_weight_pickle_is_read_without_running_code(cfg, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {}, "__author__": Evil()}, f)
    cfg.MODEL.WEIGHTS = str(path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        checks.run_checks(cfg)
    assert not marker.exists()


def test_resume_skips_weights_checks(cfg):
    cfg.MODEL.WEIGHTS = "REPLACE_ME.pkl"
    os.makedirs(cfg.OUTPUT_DIR)
    with open(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint"), "w") as f:
        f.write("model_final.pth")
    checks.run_checks(cfg, resume=True)  # resuming reads the checkpoint, not MODEL.WEIGHTS
    with pytest.raises(checks.WeightsError):
        checks.run_checks(cfg, resume=False)


def _torchvision_r18():
    import torchvision

    return torchvision.models.resnet18(weights=None).state_dict()


def test_unconverted_checkpoints_are_refused_with_the_convert_command(cfg, tmp_path):
    import torch

    state = _torchvision_r18()
    moco = {
        "epoch": 200,
        "arch": "resnet18",  # main_moco.py's (and our pretraining's) layout
        "state_dict": {"module.encoder_q." + k: v for k, v in state.items()},
    }
    torch.save(moco, tmp_path / "moco_v2_200ep.pth.tar")
    torch.save(state, tmp_path / "resnet18.pth")
    for name, layout in [("moco_v2_200ep.pth.tar", "MoCo v1/v2"), ("resnet18.pth", "torchvision")]:
        cfg.MODEL.WEIGHTS = str(tmp_path / name)
        with pytest.raises(checks.WeightsError) as e:  # the check alone: convert it first
            checks.check_weights_path(cfg.MODEL.WEIGHTS, cfg)
        msg = str(e.value)
        assert f"unconverted {layout} checkpoint" in msg and "random initialisation" in msg
        stem = name.split(".")[0]
        assert (
            f"python tools/convert.py {tmp_path / name} {stem}_c4.pkl --target c4" in msg
        )  # a C4 config
        # run_checks (train_net) converts what it can; an R18 has no bottleneck res5 for a C4 head.
        with pytest.raises(checks.WeightsError) as e:
            checks.run_checks(cfg)
        msg = str(e.value)
        assert (
            f"is a {layout} checkpoint that cannot be converted for this config's model "
            f"(--target c4): ResNet-18"
        ) in msg
        assert "Fix: use --target fpn" in msg and "\n" not in msg
        assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, f"{stem}_c4.pkl"))


def test_ssl_checkpoint_of_another_codebase_is_refused_too(cfg, tmp_path):
    import torch

    swav = {"module." + k: v for k, v in _torchvision_r18().items() if not k.startswith("fc.")}
    swav["module.prototypes.weight"] = torch.zeros(30, 16)  # SwAV's released file: DDP names
    torch.save(swav, tmp_path / "swav_800ep_pretrain.pth.tar")
    cfg.MODEL.WEIGHTS = str(tmp_path / "swav_800ep_pretrain.pth.tar")
    # Recognised by its codebase, and converted for the config when it can be: an R18 cannot feed
    # this C4 config's res5 head, which is said (with the target that would work).
    with pytest.raises(
        checks.WeightsError,
        match=r"is a SwAV / DeepCluster-v2 .* cannot be converted "
        r"for this config's model \(--target c4\).*--target fpn",
    ):
        checks.run_checks(cfg)


def test_converted_weights_damaged_after_conversion_are_refused(cfg, tmp_path):
    cfg.MODEL.WEIGHTS = _converted(tmp_path)
    checks.check_weights_path(
        cfg.MODEL.WEIGHTS, cfg
    )  # intact: its tensors match their tensor_sha256
    with open(cfg.MODEL.WEIGHTS, "rb") as f:
        raw = bytearray(f.read())
    raw[raw.find(bytes(4096)) + 100] ^= 0x01  # one bit inside the (all-zero) stem weights
    with open(cfg.MODEL.WEIGHTS, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(checks.WeightsError, match="is damaged: its tensors no longer match"):
        checks.check_weights_path(cfg.MODEL.WEIGHTS, cfg)


def test_detectron2_checkpoint_and_caffe2_pickle_still_pass(cfg, tmp_path):
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.modeling import build_model
    from detectron2.solver import build_lr_scheduler, build_optimizer

    model = build_model(cfg)  # what --eval-only MODEL.WEIGHTS out/model_final.pth reads back
    optimizer = build_optimizer(cfg, model)
    DetectionCheckpointer(
        model, str(tmp_path), optimizer=optimizer, scheduler=build_lr_scheduler(cfg, optimizer)
    ).save("model_final", iteration=3)
    cfg.MODEL.WEIGHTS = str(tmp_path / "model_final.pth")
    checks.run_checks(cfg)  # the whole model: every backbone tensor is there
    cfg.MODEL.WEIGHTS = _converted(tmp_path)
    _weights_and_pixel_checks(cfg)


@pytest.fixture
def http_folder(tmp_path, monkeypatch):
    """(folder, base URL): a local web server; downloads are cached under tmp_path
    (FVCORE_CACHE).
    """
    import functools
    import http.server
    import threading

    folder = tmp_path / "www"
    folder.mkdir()
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "iopath_cache"))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_weights_url_is_downloaded_and_unpickled_safely(cfg, tmp_path, http_folder):
    import torch

    folder, url = http_folder
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(folder / "evil.pkl", "wb") as f:
        pickle.dump({"model": {}, "__author__": Evil()}, f)
    cfg.MODEL.WEIGHTS = f"{url}/evil.pkl"
    with pytest.raises(UnsafeCheckpointError, match="refused") as e:
        checks.run_checks(cfg)
    assert isinstance(e.value, checks.WeightsError)  # train_net prints it without a traceback
    assert not marker.exists()

    torch.save(_torchvision_r18(), folder / "resnet18.pth")
    cfg.MODEL.WEIGHTS = f"{url}/resnet18.pth"
    with pytest.raises(checks.WeightsError, match="unconverted torchvision"):
        checks.check_weights_path(cfg.MODEL.WEIGHTS, cfg)
    with pytest.raises(checks.WeightsError, match="torchvision checkpoint that cannot be conv"):
        checks.run_checks(cfg)  # downloaded, then refused: ResNet-18 has no C4 res5

    os.replace(_converted(tmp_path), folder / "moco_converted.pkl")
    cfg.MODEL.WEIGHTS = f"{url}/moco_converted.pkl"
    _weights_and_pixel_checks(cfg)  # judged by its content: ours, torchvision-style like the config
    cfg.INPUT.FORMAT = "BGR"
    with pytest.raises(checks.WeightsError, match="INPUT.FORMAT: config has 'BGR'"):
        _weights_and_pixel_checks(cfg)


def test_detectron2_fair_gn_config_passes_and_stride_follows_the_weights():
    from detectron2 import model_zoo
    from detectron2.config import get_cfg

    gn = get_cfg()
    gn.merge_from_file(model_zoo.get_config_file("Misc/mask_rcnn_R_50_FPN_3x_gn.yaml"))
    assert gn.MODEL.WEIGHTS == "catalog://ImageNetPretrained/FAIR/R-50-GN"
    checks.check_pixel_format(gn)  # Detectron2's own config for its own FAIR weights
    gn.MODEL.RESNETS.STRIDE_IN_1X1 = True
    with pytest.raises(
        checks.WeightsError, match="STRIDE_IN_1X1: config has True, the weights need False"
    ):
        checks.check_pixel_format(gn)
    msra = gn.clone()
    msra.MODEL.WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    checks.check_pixel_format(msra)
    msra.MODEL.RESNETS.STRIDE_IN_1X1 = False
    with pytest.raises(
        checks.WeightsError, match="STRIDE_IN_1X1: config has False, the weights need True"
    ):
        checks.check_pixel_format(msra)
