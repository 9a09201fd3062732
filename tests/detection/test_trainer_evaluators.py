"""Trainer.build_evaluator picks Detectron2's evaluator from the dataset metadata, wired so that
perfect predictions (the ground truth itself) score 100 on the digit scenes in both layouts."""

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import annotations_to_instances
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    PascalVOCDetectionEvaluator,
)
from detectron2.structures import Instances

from detection.config_lookup import load_config
from detection.data.datasets import register_demo_datasets
from detection.evaluation import has_compiled_ops
from detection.trainer import Trainer
from tests.detection.tiny_detection import write_tiny_c4_config


@pytest.fixture
def cfg(tmp_path, tiny_demo_data):
    register_demo_datasets(tiny_demo_data["root"])
    return load_config(write_tiny_c4_config(tmp_path), ["OUTPUT_DIR", str(tmp_path / "out")])


def _score_ground_truth(evaluator, dataset_name):
    evaluator.reset()
    for record in DatasetCatalog.get(dataset_name):
        size = (record["height"], record["width"])
        gt = annotations_to_instances(record["annotations"], size, mask_format="bitmask")
        pred = Instances(
            size, pred_boxes=gt.gt_boxes, pred_classes=gt.gt_classes, scores=torch.ones(len(gt))
        )
        if gt.has("gt_masks"):
            pred.pred_masks = gt.gt_masks.tensor
        evaluator.process([record], [{"instances": pred}])
    return evaluator.evaluate()


def test_voc_layout_gets_the_voc_evaluator_ap_ap50_ap75(cfg):
    evaluator = Trainer.build_evaluator(cfg, "digits_voc_test")
    assert isinstance(evaluator, PascalVOCDetectionEvaluator)
    results = _score_ground_truth(evaluator, "digits_voc_test")
    # A class with no test object scores 0 in the VOC mean, so perfect = share of classes present.
    present = {
        a["category_id"] for r in DatasetCatalog.get("digits_voc_test") for a in r["annotations"]
    }
    perfect = 100.0 * len(present) / len(MetadataCatalog.get("digits_voc_test").thing_classes)
    assert set(results["bbox"]) == {"AP", "AP50", "AP75"}
    for value in results["bbox"].values():
        assert value == pytest.approx(perfect)


def test_coco_layout_gets_coco_evaluator_with_the_config_tasks(cfg):
    cfg.MODEL.MASK_ON = True
    evaluator = Trainer.build_evaluator(cfg, "digits_coco_test")
    assert isinstance(evaluator, COCOEvaluator)
    assert evaluator._tasks == ("bbox", "segm")
    assert evaluator._use_fast_impl is has_compiled_ops()  # False with the pure-Python wheel
    results = _score_ground_truth(evaluator, "digits_coco_test")
    for task in ("bbox", "segm"):
        assert results[task]["AP"] == pytest.approx(100.0) and results[task][
            "AP50"
        ] == pytest.approx(100.0)


def test_cityscapes_types_and_unknown_type(cfg):
    assert isinstance(
        Trainer.build_evaluator(cfg, "cityscapes_fine_instance_seg_val"),
        CityscapesInstanceEvaluator,
    )
    assert isinstance(
        Trainer.build_evaluator(cfg, "cityscapes_fine_sem_seg_val"), CityscapesSemSegEvaluator
    )
    MetadataCatalog.get("no_evaluator_ds").set(evaluator_type="mystery")
    with pytest.raises(NotImplementedError, match="evaluator_type='mystery'.*Fix: register"):
        Trainer.build_evaluator(cfg, "no_evaluator_ds")
