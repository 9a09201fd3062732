"""Pick the Detectron2 evaluator for a dataset from its metadata ``evaluator_type``.

Same convention as Detectron2's ``tools/train_net.py``; the difference is that the COCO/LVIS
tasks come from the config (bbox, + segm if MASK_ON, + keypoints if KEYPOINT_ON), and the fast
COCO evaluation is used only when Detectron2's compiled ``_C`` extension exists.
"""

import logging
import os

from detectron2.data import MetadataCatalog
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    DatasetEvaluators,
    LVISEvaluator,
    PascalVOCDetectionEvaluator,
    SemSegEvaluator,
)

from detection.compiled_ops import has_compiled_ops
from detection.densepose import (
    accept_timeout_sec,
    densepose_on,
    densepose_trainer_class,
)

logger = logging.getLogger(__name__)


class CityscapesInstanceEvaluatorInOutput(CityscapesInstanceEvaluator):
    """Detectron2's evaluator, but cityscapesscripts' per-instance matches (which it writes to
    ``./matches.json``, whatever the working directory) go to the output folder instead."""

    def __init__(self, dataset_name, output_folder):
        super().__init__(dataset_name)
        self._output_folder = output_folder

    def evaluate(self):
        import cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling as cityscapes_eval

        write = cityscapes_eval.writeDict2JSON
        folder = self._output_folder

        def write_into_output(data, name):
            os.makedirs(folder, exist_ok=True)
            write(data, os.path.join(folder, os.path.basename(name)))

        cityscapes_eval.writeDict2JSON = write_into_output
        try:
            return super().evaluate()
        finally:
            cityscapes_eval.writeDict2JSON = write


def instance_tasks(cfg):
    tasks = ["bbox"]
    if cfg.MODEL.MASK_ON:
        tasks.append("segm")
    if cfg.MODEL.KEYPOINT_ON:
        tasks.append("keypoints")
    return tuple(tasks)


def build_evaluator(cfg, dataset_name, output_folder=None):
    """The evaluator (or ``DatasetEvaluators``) for ``dataset_name`` under ``cfg``."""
    if output_folder is None:
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference")
    if densepose_on(cfg):
        # DensePose scores its own outputs (GPS/GPSm) next to COCO boxes; its trainer knows how.
        # Its evaluator asks PathManager for Pdist_matrix.pkl with timeout_sec=120, which the
        # installed iopath rejects ("Unused arguments") after all of training: accept it first.
        accept_timeout_sec()
        return densepose_trainer_class().build_evaluator(cfg, dataset_name, output_folder)

    evaluator_type = MetadataCatalog.get(dataset_name).get("evaluator_type")
    if evaluator_type == "pascal_voc":
        # Reports AP (COCO-style, IoU .50:.95), AP50 and AP75 from the VOC xml files.
        return PascalVOCDetectionEvaluator(dataset_name)
    if evaluator_type == "cityscapes_instance":
        return CityscapesInstanceEvaluatorInOutput(dataset_name, output_folder)
    if evaluator_type == "cityscapes_sem_seg":
        return CityscapesSemSegEvaluator(dataset_name)
    if evaluator_type == "lvis":
        _patch_lvis_for_numpy()
        return LVISEvaluator(
            dataset_name,
            instance_tasks(cfg),
            output_dir=output_folder,
            max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
        )
    evaluators = []
    if evaluator_type in ("sem_seg", "coco_panoptic_seg"):
        evaluators.append(SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder))
    if evaluator_type in ("coco", "coco_panoptic_seg"):
        if not has_compiled_ops():
            logger.info(
                "detectron2._C not built: COCO evaluation uses pycocotools (slower, same numbers)."
            )
        evaluators.append(
            COCOEvaluator(
                dataset_name,
                instance_tasks(cfg),
                output_dir=output_folder,
                max_dets_per_image=cfg.TEST.DETECTIONS_PER_IMAGE,
                use_fast_impl=has_compiled_ops(),
                kpt_oks_sigmas=cfg.TEST.KEYPOINT_OKS_SIGMAS,
            )
        )
    if evaluator_type == "coco_panoptic_seg":
        evaluators.append(COCOPanopticEvaluator(dataset_name, output_folder))
    if not evaluators:
        raise NotImplementedError(
            f"no evaluator for dataset {dataset_name!r} (metadata evaluator_type="
            f"{evaluator_type!r}). Fix: register the dataset with evaluator_type one of "
            "pascal_voc, coco, lvis, cityscapes_instance, cityscapes_sem_seg, sem_seg, "
            "coco_panoptic_seg (MetadataCatalog.get(name).set(evaluator_type=...))."
        )
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)


def _patch_lvis_for_numpy():
    """lvis 0.5.3 (the latest release) evaluates with ``np.float``, removed in NumPy 1.24.

    Without this alias every LVIS evaluation crashes with AttributeError; ``float`` is what
    ``np.float`` always was.
    """
    import numpy as np

    if not hasattr(np, "float"):
        np.float = float
