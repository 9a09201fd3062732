"""tools/train_net.py as users run it: a subprocess, --config alias, two gloo processes on CPU."""

import json
import os
import subprocess
import sys

import torch

from tests.detection.tiny_detection import write_tiny_c4_config
from tests.paths import REPO


def _train_net(*argv, env):
    return subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train_net.py"), *argv],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


# tools/train_net.py, with each rank's BatchNorm statistics saved after training. Spawned ranks
# re-import this file (multiprocessing's spawn re-runs the parent's main file), so the patch holds
# there.
RECORD_BN = """\
import os, sys
sys.path.insert(0, {repo!r})
import torch
from detectron2.utils import comm
from detection import trainer

_train = trainer.Trainer.train


def _train_and_record(self):
    out = _train(self)
    model = getattr(self.model, "module", self.model)
    stats = {{name: torch.cat([m.running_mean, m.running_var]) for name, m in model.named_modules()
              if isinstance(m, torch.nn.BatchNorm2d)}}
    torch.save(stats, os.path.join(self.cfg.OUTPUT_DIR, f"bn_rank{{comm.get_rank()}}.pt"))
    return out


trainer.Trainer.train = _train_and_record
if __name__ == "__main__":  # the tool's own code, run as this file (runpy would hide it from spawn)
    tool = os.path.join({repo!r}, "tools", "train_net.py")
    sys.path.insert(0, os.path.dirname(tool))  # as `python tools/train_net.py` would
    exec(compile(open(tool).read(), tool, "exec"))
"""


def test_two_process_cpu_training_and_evaluation(tmp_path, tiny_demo_data, repo_stays_clean):
    env = dict(
        os.environ, DEMO_DATA=tiny_demo_data["root"], DETECTRON2_DATASETS=str(tmp_path / "none")
    )
    out = tmp_path / "run"
    wrapper = tmp_path / "train_net_recording_bn.py"
    wrapper.write_text(RECORD_BN.format(repo=REPO))
    # A config for 1 process x 1 image, linearly scaled (Detectron2's REFERENCE_WORLD_SIZE rule) to
    # 2 processes: batch 2 (one image each, so BN (naiveSyncBN) must sync to see both), LR x2,
    # iterations / 2.
    proc = subprocess.run(
        [
            sys.executable,
            str(wrapper),
            "--config",
            write_tiny_c4_config(tmp_path),
            "--num-gpus",
            "2",
            "--dist-url",
            "auto",
            "OUTPUT_DIR",
            str(out),
            "SOLVER.REFERENCE_WORLD_SIZE",
            "1",
            "SOLVER.IMS_PER_BATCH",
            "1",
            "SOLVER.MAX_ITER",
            "4",
            "SOLVER.BASE_LR",
            "0.001",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    protocol = [
        line for line in (proc.stdout + proc.stderr).splitlines() if "effective protocol:" in line
    ]
    assert len(protocol) == 1, protocol  # rank 0 only
    assert (
        "LINEAR-SCALED by Detectron2's SOLVER.REFERENCE_WORLD_SIZE rule from 1 to 2 "
        "processes (x2; not the paper's protocol, whose total batch is the config's 1): "
        "2 process(es) x 1 images = total batch 2, BASE_LR 0.002, MAX_ITER 2, STEPS (), "
        "WARMUP_ITERS 0"
    ) in protocol[0]
    # Synchronised BN: both ranks hold the same statistics in every BN layer (the backbone's and
    # the res5 head's extra norm), though each saw its own image; and they moved from their init.
    bn = [torch.load(out / f"bn_rank{r}.pt", weights_only=True) for r in range(2)]
    assert bn[0].keys() == bn[1].keys() and len(bn[0]) > 50
    assert any(name.startswith("roi_heads") for name in bn[0])
    for name, stats in bn[0].items():
        torch.testing.assert_close(stats, bn[1][name], rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(bn[0]["backbone.stem.conv1.norm"][:64], torch.zeros(64))
    with open(out / "eval_results.json") as f:
        results = json.load(f)
    assert set(results["digits_voc_test"]["bbox"]) == {"AP", "AP50", "AP75"}
    prov = results["__provenance__"]
    assert prov["world_size"] == 2
    assert prov["weights"] == {"path": "", "sha256": None, "source": None, "note": "random init"}
    assert prov["protocol"] == {
        "label": "linear-scaled",
        "world_size": 2,
        "reference_world_size": 2,
        "ims_per_batch": 2,
        "ims_per_process": 1,
        "base_lr": 0.002,
        "max_iter": 2,
        "steps": [],
        "warmup_iters": 0,
    }
    with open(out / "config.yaml") as f:  # what ran, as Detectron2 saved it
        saved = f.read()
    assert "PROTOCOL: linear-scaled" in saved and "IMS_PER_BATCH: 2" in saved
    with open(out / "log.txt") as f:
        log = f.read()
    assert "World size: 2" in log and "Starting training from iteration 0" in log
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()


def test_clear_error_and_exit_code_for_a_missing_dataset(
    tmp_path, tiny_demo_data, repo_stays_clean
):
    env = dict(
        os.environ, DEMO_DATA=tiny_demo_data["root"], DETECTRON2_DATASETS=str(tmp_path / "none")
    )
    proc = _train_net(
        "--config",
        write_tiny_c4_config(tmp_path),
        "--num-gpus",
        "0",
        "OUTPUT_DIR",
        str(tmp_path / "run"),
        "DATASETS.TRAIN",
        '("voc_2007_trainval",)',
        env=env,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # a message, not a crash
    assert "error: dataset 'voc_2007_trainval': missing" in proc.stderr
    assert f"DETECTRON2_DATASETS={tmp_path / 'none'}" in proc.stderr
    assert not (tmp_path / "run" / "model_final.pth").exists()
