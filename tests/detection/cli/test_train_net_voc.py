"""The design brief's command as a user runs it,
``tools/train_net.py --config voc_R50_C4_moco.yaml``, on Pascal VOC in its real layout (VOC2007 +
VOC2012 under $DETECTRON2_DATASETS, Detectron2's own builtin registration), with a MoCo
pretraining checkpoint or an already converted file as MODEL.WEIGHTS. A narrow ResNet-50
(bottlenecks 8x thinner) and 2 iterations keep it to a minute.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from torchvision.models.resnet import Bottleneck, ResNet

from convert.writer import sha256_of
from detection.transfer.tables import MixedTrialsError, build_tables, to_csv
from tests.detection import layouts
from tests.paths import REPO

# The paper's config with the widths, sizes and length of a CPU test. BASE_LR 0: the convolutions
# keep their initial values, so the final model shows where training started from.
TINY = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "8",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.MIN_SIZE_TEST",
    "64",
    "INPUT.MAX_SIZE_TEST",
    "128",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.BASE_LR",
    "0.0",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.STEPS",
    "()",
    "SOLVER.WARMUP_ITERS",
    "0",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
    "TEST.EVAL_PERIOD",
    "0",
    "TEST.PRECISE_BN.NUM_ITER",
    "1",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "16",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
    "SEED",
    "7",
]


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("datasets"))
    layouts.write_voc_detection(root, 2007, {"trainval": 2, "test": 2}, seed=10)
    layouts.write_voc_detection(root, 2012, {"trainval": 2}, seed=11)
    torch.manual_seed(0)
    net = ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=8)
    ckpt = os.path.join(root, "moco_v2_narrow.pth.tar")  # main_moco.py's layout
    state = {"module.encoder_q." + k: v for k, v in net.state_dict().items()}
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, ckpt)
    env = dict(os.environ, DETECTRON2_DATASETS=root, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return {"root": root, "ckpt": ckpt, "net": net.state_dict(), "env": env}


def _train_net(voc, out, weights, *extra):
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config",
            "voc_R50_C4_moco.yaml",
            "--num-gpus",
            "0",
            *TINY,
            "OUTPUT_DIR",
            str(out),
            "MODEL.WEIGHTS",
            weights,
            *extra,
        ],
        cwd=REPO,
        env=voc["env"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _starts_from(out, net):
    """The final model's convolutions are the checkpoint's (BASE_LR 0): it trained from them."""
    final = os.path.join(out, "model_final.pth")  # written by our own run
    model = torch.load(final, map_location="cpu", weights_only=False)["model"]
    for d2, tv in [
        ("backbone.stem.conv1.weight", "conv1.weight"),
        ("backbone.res4.5.conv2.weight", "layer3.5.conv2.weight"),
        ("roi_heads.res5.2.conv3.weight", "layer4.2.conv3.weight"),
    ]:
        assert torch.equal(torch.as_tensor(model[d2]), net[tv]), d2


def test_the_briefs_command_converts_verifies_trains_and_records(voc, tmp_path):
    out = tmp_path / "run"
    log = _train_net(voc, out, voc["ckpt"])
    converted = out / "moco_v2_narrow_c4.pkl"
    assert (
        f"MODEL.WEIGHTS {voc['ckpt']} is a MoCo v1/v2 pretraining checkpoint: converted for "
        f"--target c4 (this config's model) into {converted}; verified: 265/265 backbone "
        f"tensors loaded, features equal the source ResNet's"
    ) in log
    # Said once: the setup in the training process reads the converted file, it does not convert.
    assert len([line for line in log.splitlines() if "pretraining checkpoint:" in line]) == 1
    protocol = [line for line in log.splitlines() if "effective protocol:" in line]
    assert len(protocol) == 1 and protocol[0].endswith(
        "1 process(es) x 2 images = total batch 2, BASE_LR 0, MAX_ITER 2, STEPS (), WARMUP_ITERS 0"
    )
    assert "the config's total batch" in protocol[0] and "LINEAR" not in protocol[0]
    assert protocol[0].split("]: ")[-1] in (out / "log.txt").read_text()
    _starts_from(out, voc["net"])

    with open(out / "eval_results.json") as f:
        results = json.load(f)
    assert set(results["voc_2007_test"]["bbox"]) == {"AP", "AP50", "AP75"}
    prov = results["__provenance__"]
    assert prov["config_file"] == os.path.join(
        REPO, "configs", "PascalVOC-Detection", "voc_R50_C4_moco.yaml"
    )
    assert prov["weights"]["path"] == str(converted)
    assert prov["weights"]["sha256"] == sha256_of(converted)
    assert prov["weights"]["source"] == {
        "file": "moco_v2_narrow.pth.tar",
        "sha256": sha256_of(voc["ckpt"]),
        "format": "moco",
    }
    assert prov["world_size"] == 1 and prov["seed"] == 7 and len(prov["config_sha256"]) == 64
    assert prov["protocol"] == {
        "label": "same total batch as the config",
        "world_size": 1,
        "reference_world_size": 0,
        "ims_per_batch": 2,
        "ims_per_process": 2,
        "base_lr": 0.0,
        "max_iter": 2,
        "steps": [],
        "warmup_iters": 0,
    }
    assert prov["code"] == "unknown" or (
        len(prov["code"]["commit"]) == 40 and isinstance(prov["code"]["dirty"], bool)
    )
    assert prov["detectron2"].startswith(("pure Python", "official compiled"))

    # A converted file is used as it is: no conversion, the same start.
    out2 = tmp_path / "run2"
    log2 = _train_net(voc, out2, str(converted))
    assert "pretraining checkpoint" not in log2 and not list(out2.glob("*.pkl"))
    _starts_from(out2, voc["net"])
    with open(out2 / "eval_results.json") as f:
        prov2 = json.load(f)["__provenance__"]
    assert prov2["weights"]["sha256"] == prov["weights"]["sha256"]
    assert prov2["config_sha256"] == prov["config_sha256"]  # OUTPUT_DIR, MODEL.WEIGHTS not hashed

    # The two runs as trials of one grid cell agree; a trial with another LR is refused.
    from detection.transfer.results import collect

    grid = tmp_path / "grid"
    for trial, folder in enumerate((out, out2)):
        (grid / "voc" / "moco" / f"trial{trial}").mkdir(parents=True)
        shutil.copy(folder / "eval_results.json", grid / "voc" / "moco" / f"trial{trial}")
    tables, _ = build_tables(collect(grid), baseline="moco")
    csv_text = to_csv(tables)
    assert prov["config_sha256"] in csv_text and prov["weights"]["sha256"] in csv_text
    assert ",same total batch as the config,1,7," in csv_text  # protocol, world size, seeds
    bad = grid / "voc" / "moco" / "trial1" / "eval_results.json"
    data = json.loads(bad.read_text())
    data["__provenance__"]["protocol"]["base_lr"] = 0.005
    bad.write_text(json.dumps(data))
    with pytest.raises(
        MixedTrialsError, match=r"voc/moco: .*base_lr \(trial0: 0.0, trial1: 0.005\)"
    ):
        build_tables(collect(grid), baseline="moco")


def test_weights_for_another_architecture_stop_before_training(voc, tmp_path):
    from convert import convert_checkpoint

    fpn = convert_checkpoint(voc["ckpt"], tmp_path / "moco_fpn.pkl", target="fpn").output_path
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "train_net.py"),
            "--config",
            "voc_R50_C4_moco",
            "--num-gpus",
            "0",
            *TINY,
            "OUTPUT_DIR",
            str(tmp_path / "run"),
            "MODEL.WEIGHTS",
            str(fpn),
        ],
        cwd=REPO,
        env=voc["env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and proc.stderr.strip().endswith(errors[0].strip())
    assert "would leave 265 of 265 backbone tensors" in errors[0]
    assert (
        "Fix: python tools/convert.py moco_v2_narrow.pth.tar moco_v2_narrow_c4.pkl --target c4"
        in errors[0]
    )
    assert not (tmp_path / "run" / "model_final.pth").exists()
