"""Detectron2's ``DefaultTrainer`` for the MoCo transfer configs, and the train_net entry point.

What differs from Detectron2's ``tools/train_net.py``:

* evaluators are chosen from the dataset metadata (``detection.evaluators``); semantic
  segmentation and DensePose configs get their own train loaders;
* final results are also written to ``OUTPUT_DIR/eval_results.json`` as
  ``{dataset: {task: {metric: value}}}`` (atomically), for the results table;
* it runs on CPU: one process in-process, several as gloo processes (DistributedDataParallel
  rejects ``device_ids`` for CPU models, which ``DefaultTrainer`` always passes), AMP only on CUDA;
* ``setup`` resolves config names under ``configs/`` and runs ``detection.checks`` first.
"""
import argparse
import json
import logging
import os
import weakref

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import DefaultTrainer, default_argument_parser, default_setup, launch
from detectron2.engine.defaults import create_ddp_model
from detectron2.engine.train_loop import AMPTrainer, SimpleTrainer, TrainerBase
from detectron2.evaluation import verify_results
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from pretrain.io import atomic_write_bytes

from . import checks
from .config import load_config, resolve_config_path
from .densepose_support import DensePoseMissingError, densepose_on, densepose_trainer_class
from .evaluators import build_evaluator

EVAL_RESULTS_FILE = "eval_results.json"
logger = logging.getLogger(__name__)


def _on_cuda(cfg):
    return str(cfg.MODEL.DEVICE).startswith("cuda")


class Trainer(DefaultTrainer):
    def __init__(self, cfg):
        # DefaultTrainer.__init__, except the DDP wrapping and AMP choice (see module doc).
        TrainerBase.__init__(self)
        if not logging.getLogger("detectron2").isEnabledFor(logging.INFO):
            setup_logger()
        cfg = DefaultTrainer.auto_scale_workers(cfg, comm.get_world_size())
        model = self.build_model(cfg)
        optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        device_ids = [comm.get_local_rank()] if _on_cuda(cfg) else None
        model = create_ddp_model(model, broadcast_buffers=False, device_ids=device_ids)
        use_amp = cfg.SOLVER.AMP.ENABLED and _on_cuda(cfg)
        if cfg.SOLVER.AMP.ENABLED and not use_amp:
            logger.warning("SOLVER.AMP.ENABLED is ignored on %s: mixed precision is CUDA-only here.",
                           cfg.MODEL.DEVICE)
        self._trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, data_loader, optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, optimizer)
        self.checkpointer = DetectionCheckpointer(model, cfg.OUTPUT_DIR, trainer=weakref.proxy(self))
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
            # The paper's scale-then-crop augmentation, labels read as class ids (semantic_seg.py).
            from .semantic_seg import build_sem_seg_train_loader

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
    """``OUTPUT_DIR/eval_results.json``: ``{dataset: {task: {metric: value}}}``, atomically."""
    path = os.path.join(cfg.OUTPUT_DIR, EVAL_RESULTS_FILE)
    data = _plain(per_dataset(cfg, results))
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())
    logger.info("Evaluation results written to %s", path)
    return path


def argument_parser():
    """Detectron2's ``default_argument_parser`` plus ``--config`` (a name under configs/ or a path)
    and ``--num-gpus`` that also takes 0 (one CPU process) and ``auto``."""
    parser = default_argument_parser()
    parser.add_argument("--config", dest="config_file", metavar="NAME_OR_FILE",
                        help="alias of --config-file; a bare name is looked up in configs/")
    # Detectron2's --num-gpus is int-only; keep the option, widen what it accepts.
    num_gpus = next(a for a in parser._actions if a.dest == "num_gpus")
    num_gpus.type = _num_gpus
    num_gpus.help = ("processes per machine: N (GPUs, or gloo processes on a machine without GPUs), "
                     "0 (one process on CPU), or 'auto' (all visible GPUs, else one CPU process)")
    return parser


def _num_gpus(text):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--num-gpus must be an integer >= 0 or 'auto', got {text!r}")
    if n < 0:
        raise argparse.ArgumentTypeError(f"--num-gpus must be >= 0, got {n}")
    return n


def num_processes(args):
    """Processes to launch on this machine for ``args.num_gpus``; fails early if GPUs are short."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.num_gpus == "auto":
        return max(gpus, 1)
    if args.num_gpus == 0:
        return 1
    if gpus and args.num_gpus > gpus:
        raise UsageError(f"--num-gpus {args.num_gpus} but only {gpus} GPU(s) are visible. "
                         f"Fix: --num-gpus {gpus} (or --num-gpus auto).")
    return args.num_gpus


class UsageError(ValueError):
    """A command-line mistake; the message says how to fix it."""


def build_config(args):
    """The config ``args`` ask for (resolved name, overrides, device), checked, frozen."""
    if not args.config_file:
        raise UsageError("no config given. Fix: --config NAME (a file in configs/) or --config-file PATH.")
    args.config_file = resolve_config_path(args.config_file)
    cfg = load_config(args.config_file, args.opts or ())
    if args.num_gpus == 0 or not torch.cuda.is_available():
        if _on_cuda(cfg):
            cfg.MODEL.DEVICE = "cpu"  # configs say cuda; a machine without GPUs still runs them
    cfg.freeze()
    if cfg.MOCO.RUN_CHECKS:
        checks.run_checks(cfg, eval_only=args.eval_only, resume=args.resume)
    return cfg


def setup(args):
    """The frozen config for ``args``, checked, after Detectron2's ``default_setup``."""
    cfg = build_config(args)
    default_setup(cfg, args)
    return cfg


# What a user can fix from the message alone: printed without a traceback by tools/train_net.py.
USER_ERRORS = (UsageError, checks.CheckError, FileNotFoundError, DensePoseMissingError)


def run(args):
    """tools/train_net.py: check the config in this process, then ``launch(main, ...)``."""
    build_config(args)  # fail here, once, before any worker process starts
    launch(main, num_processes(args), num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


def main(args):
    """Train (or with ``--eval-only`` evaluate) one config; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume)
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return getattr(trainer, "_last_eval_results", None)
