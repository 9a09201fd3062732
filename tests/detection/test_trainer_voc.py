"""The Trainer end to end, in-process: a real R50-C4 MoCo-style model on the tiny digit scenes
(Pascal VOC and COCO layouts), 2 iterations, evaluation, eval-only from the checkpoint, resume."""

import json
import math
import os

import torch

from detection.cli.train_net import argument_parser, main
from detection.data.datasets import register_demo_datasets
from detection.trainer import EVAL_RESULTS_FILE
from tests.detection.tiny_detection import write_tiny_c4_config


def _run(*argv):
    return main(argument_parser().parse_args(list(argv)))


def _json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_train_evaluate_eval_only_and_resume(tmp_path, tiny_demo_data):
    register_demo_datasets(tiny_demo_data["root"])
    config = write_tiny_c4_config(tmp_path)
    out = str(tmp_path / "run")

    # 1. Train 2 iterations, then evaluate on both layouts of the test scenes.
    results = _run(
        "--config",
        config,
        "--num-gpus",
        "0",
        "OUTPUT_DIR",
        out,
        "DATASETS.TEST",
        '("digits_voc_test", "digits_coco_test")',
    )
    with open(os.path.join(out, EVAL_RESULTS_FILE)) as f:
        saved = json.load(f)
    assert set(saved) == {"digits_voc_test", "digits_coco_test", "__provenance__"}
    assert saved["__provenance__"]["protocol"]["max_iter"] == 2  # see test_provenance.py
    voc = saved["digits_voc_test"]["bbox"]
    assert set(voc) == {"AP", "AP50", "AP75"}  # VOC 2007 metric: AP50 plus COCO-style AP, AP75
    for value in voc.values():
        assert isinstance(value, float) and 0.0 <= value <= 100.0
    coco = saved["digits_coco_test"]["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(coco)
    # Only the size buckets may be NaN (COCO: no objects of that size); AP, AP50, AP75 are numbers.
    for name, v in coco.items():
        assert isinstance(v, float) and (
            0.0 <= v <= 100.0 or (math.isnan(v) and name in ("APs", "APm", "APl"))
        ), (name, v)
    assert results["digits_voc_test"]["bbox"]["AP50"] == voc["AP50"]
    # Detectron2's metrics.json holds them too (flattened), next to the training losses.
    lines = _json_lines(os.path.join(out, "metrics.json"))
    assert any("total_loss" in line for line in lines)
    assert lines[-1]["digits_voc_test/bbox/AP50"] == voc["AP50"]
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 1

    # 2. --eval-only from the final checkpoint reproduces the run's predictions exactly
    #    (a model that did not load the weights would predict other boxes).
    out_eval = str(tmp_path / "eval")
    _run(
        "--config",
        config,
        "--eval-only",
        "OUTPUT_DIR",
        out_eval,
        "MODEL.WEIGHTS",
        os.path.join(out, "model_final.pth"),
        "DATASETS.TEST",
        '("digits_coco_test",)',
    )
    with open(os.path.join(out, "inference", "coco_instances_results.json")) as f:
        trained = json.load(f)
    with open(os.path.join(out_eval, "inference", "coco_instances_results.json")) as f:
        evaluated = json.load(f)
    assert len(trained) > 0 and evaluated == trained
    with open(os.path.join(out_eval, EVAL_RESULTS_FILE)) as f:
        assert (
            json.load(f)["digits_coco_test"]["bbox"]["AP50"] == coco["AP50"]
        )  # a number (checked above)

    # 3. --resume continues at iteration 2 from last_checkpoint (no evaluation, to stay quick;
    #    the earlier eval_results.json is kept).
    _run(
        "--config",
        config,
        "--num-gpus",
        "0",
        "--resume",
        "OUTPUT_DIR",
        out,
        "SOLVER.MAX_ITER",
        "3",
        "DATASETS.TEST",
        "()",
    )
    assert torch.load(os.path.join(out, "model_final.pth"), weights_only=False)["iteration"] == 2
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert "Starting training from iteration 2" in log
    trained_iters = [
        line["iteration"]
        for line in _json_lines(os.path.join(out, "metrics.json"))
        if "total_loss" in line
    ]
    assert trained_iters == [1, 2]
    with open(os.path.join(out, EVAL_RESULTS_FILE)) as f:
        assert json.load(f) == saved
