"""tools/train_net.py as users run it: a subprocess, --config alias, two gloo processes on CPU."""
import json
import os
import subprocess
import sys

from tests.detection.tiny_detection import write_tiny_c4_config
from tests.paths import REPO


def _train_net(*argv, env):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "train_net.py"), *argv],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


def test_two_process_cpu_training_and_evaluation(tmp_path, tiny_demo_data):
    env = dict(os.environ, DEMO_DATA=tiny_demo_data["root"], DETECTRON2_DATASETS=str(tmp_path / "none"))
    out = tmp_path / "run"
    # A config for 1 process x 1 image, linearly scaled (Detectron2's REFERENCE_WORLD_SIZE rule) to
    # 2 processes: batch 2 (one image each, so BN (naiveSyncBN) must sync to see both), LR x2,
    # iterations / 2.
    proc = _train_net("--config", write_tiny_c4_config(tmp_path), "--num-gpus", "2", "--dist-url", "auto",
                      "OUTPUT_DIR", str(out), "SOLVER.REFERENCE_WORLD_SIZE", "1",
                      "SOLVER.IMS_PER_BATCH", "1", "SOLVER.MAX_ITER", "4",
                      "SOLVER.BASE_LR", "0.001", env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    protocol = [line for line in (proc.stdout + proc.stderr).splitlines()
                if "effective protocol:" in line]
    assert len(protocol) == 1, protocol  # rank 0 only
    assert ("LINEAR-SCALED by Detectron2's SOLVER.REFERENCE_WORLD_SIZE rule from 1 to 2 "
            "processes (x2; not the paper's protocol, whose total batch is the config's 1): "
            "2 process(es) x 1 images = total batch 2, BASE_LR 0.002, MAX_ITER 2, STEPS (), "
            "WARMUP_ITERS 0") in protocol[0]
    with open(out / "eval_results.json") as f:
        results = json.load(f)
    assert set(results["digits_voc_test"]["bbox"]) == {"AP", "AP50", "AP75"}
    prov = results["__provenance__"]
    assert prov["world_size"] == 2
    assert prov["weights"] == {"path": "", "sha256": None, "source": None, "note": "random init"}
    assert prov["protocol"] == {"label": "linear-scaled", "world_size": 2,
                                "reference_world_size": 2, "ims_per_batch": 2, "ims_per_process": 1,
                                "base_lr": 0.002,
                                "max_iter": 2, "steps": [], "warmup_iters": 0}
    with open(out / "config.yaml") as f:  # what ran, as Detectron2 saved it
        saved = f.read()
    assert "PROTOCOL: linear-scaled" in saved and "IMS_PER_BATCH: 2" in saved
    with open(out / "log.txt") as f:
        log = f.read()
    assert "World size: 2" in log and "Starting training from iteration 0" in log
    assert (out / "model_final.pth").is_file() and (out / "config.yaml").is_file()


def test_clear_error_and_exit_code_for_a_missing_dataset(tmp_path, tiny_demo_data):
    env = dict(os.environ, DEMO_DATA=tiny_demo_data["root"], DETECTRON2_DATASETS=str(tmp_path / "none"))
    proc = _train_net("--config", write_tiny_c4_config(tmp_path), "--num-gpus", "0",
                      "OUTPUT_DIR", str(tmp_path / "run"), "DATASETS.TRAIN", '("voc_2007_trainval",)', env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr  # a message, not a crash
    assert "error: dataset 'voc_2007_trainval': missing" in proc.stderr
    assert f"DETECTRON2_DATASETS={tmp_path / 'none'}" in proc.stderr
    assert not (tmp_path / "run" / "model_final.pth").exists()
