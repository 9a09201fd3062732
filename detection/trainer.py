"""Detectron2's ``DefaultTrainer`` for the MoCo transfer configs.

What differs from Detectron2's ``tools/train_net.py``:

* evaluators are chosen from the dataset metadata (``detection.evaluation``); semantic
  segmentation and DensePose configs get their own train loaders;
* final results are also written to ``OUTPUT_DIR/eval_results.json`` as
  ``{dataset: {task: {metric: value}}}`` (atomically) with their provenance, for the results table;
* it runs on CPU: one process in-process, several as gloo processes (DistributedDataParallel
  rejects ``device_ids`` for CPU models, which ``DefaultTrainer`` always passes); AMP is turned
  off on CPU where the config is built (``detection.cli.train_net``);
"""

import json
import logging
import os
import weakref

from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer
from detectron2.engine.defaults import create_ddp_model
from detectron2.engine.train_loop import SimpleTrainer, TrainerBase
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from detection.densepose import densepose_on, densepose_trainer_class
from detection.evaluation import build_evaluator
from detection.transfer.results import PROVENANCE_KEY
from pretrain.io import atomic_write_bytes

EVAL_RESULTS_FILE = "eval_results.json"
logger = logging.getLogger(__name__)


def on_cuda(cfg):
    return str(cfg.MODEL.DEVICE).startswith("cuda")


class Trainer(DefaultTrainer):
    """``DefaultTrainer`` with our evaluators, train loaders and ``eval_results.json``.

    Extended through its ``build_*`` classmethods. The one exception is the constructor for
    several CPU processes: Detectron2's ``create_ddp_model`` always passes
    ``device_ids=[local_rank]``, which ``DistributedDataParallel`` rejects for CPU models.
    """

    def __init__(self, cfg):
        if on_cuda(cfg) or comm.get_world_size() == 1:
            super().__init__(cfg)
        else:
            self._init_cpu_processes(cfg)

    def _init_cpu_processes(self, cfg):
        # DefaultTrainer.__init__ with DDP built without device_ids (gloo processes on CPU).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=None)
        self._trainer = SimpleTrainer(model, data_loader, optimizer)  # AMP is CUDA-only
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self)
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self.cfg = cfg
        self.register_hooks(self.build_hooks())

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def build_train_loader(cls, cfg):
        if densepose_on(cfg):  # DensePose annotations need DensePose's dataset mapper
            return densepose_trainer_class().build_train_loader(cfg)
        if cfg.MODEL.META_ARCHITECTURE == "SemanticSegmentor":
            # The paper's scale-then-crop augmentation, labels read as class ids
            # (detection/modeling/semantic_seg.py).
            from detection.modeling.semantic_seg import build_sem_seg_train_loader

            return build_sem_seg_train_loader(cfg)
        return super().build_train_loader(cfg)

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        if densepose_on(cfg):
            return densepose_trainer_class().build_test_loader(cfg, dataset_name)
        return super().build_test_loader(cfg, dataset_name)

    @classmethod
    def test(cls, cfg, model, evaluators=None):
        results = super().test(cfg, model, evaluators)
        if comm.is_main_process() and len(cfg.DATASETS.TEST):  # no test set: keep earlier results
            write_eval_results(cfg, results)
        return results


def per_dataset(cfg, results):
    """Detectron2 unwraps the results of a single test dataset; put the name back."""
    if len(cfg.DATASETS.TEST) == 1:
        return {cfg.DATASETS.TEST[0]: dict(results)}
    return {name: dict(results.get(name, {})) for name in cfg.DATASETS.TEST}


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    try:
        return float(value)  # numpy scalars; NaN stays NaN (COCO: no objects of that size)
    except (TypeError, ValueError):
        return value


def write_eval_results(cfg, results):
    """``OUTPUT_DIR/eval_results.json``: ``{dataset: {task: {metric: value}}}``, atomically, and
    under ``"__provenance__"`` how they were made (``detection.provenance``)."""
    from detection.provenance import provenance

    path = os.path.join(cfg.OUTPUT_DIR, EVAL_RESULTS_FILE)
    data = _plain(per_dataset(cfg, results))
    data[PROVENANCE_KEY] = provenance(cfg)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    logger.info("Evaluation results written to %s", path)
    return path
