"""Fine-tune / evaluate a Detectron2 model with the MoCo transfer configs.

    python tools/train_net.py --config voc0712_R50_C4_24k_moco --num-gpus 8 MODEL.WEIGHTS moco.pkl
    python tools/train_net.py --config voc0712_R50_C4_24k_moco --eval-only MODEL.WEIGHTS
    out/model_final.pth
    python tools/train_net.py --config-file configs/x.yaml --num-gpus 0 --resume OUTPUT_DIR out

Detectron2's standard arguments (--num-gpus, --num-machines, --machine-rank, --dist-url, --resume,
--eval-only, trailing KEY VALUE overrides); --config also takes a bare name from configs/.
Without GPUs, --num-gpus 0 runs one CPU process and --num-gpus N runs N gloo processes.
"""

import argparse
import logging
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.engine import default_argument_parser, default_setup, launch
from detectron2.evaluation import verify_results
from detectron2.utils import comm

from detection import checks
from detection.config_lookup import load_config, resolve_config_path
from detection.densepose import DensePoseMissingError
from detection.provenance import ProtocolError, apply_protocol
from detection.trainer import Trainer, on_cuda

logger = logging.getLogger(__name__)


def argument_parser():
    """Detectron2's ``default_argument_parser`` plus ``--config`` (a name under configs/ or a path)
    and ``--num-gpus`` that also takes 0 (one CPU process) and ``auto``."""
    parser = default_argument_parser()
    parser.add_argument(
        "--config",
        dest="config_file",
        metavar="NAME_OR_FILE",
        help="alias of --config-file; a bare name is looked up in configs/",
    )
    # Detectron2's --num-gpus is int-only; keep the option, widen what it accepts.
    num_gpus = next(a for a in parser._actions if a.dest == "num_gpus")
    num_gpus.type = _num_gpus
    num_gpus.help = (
        "processes per machine: N (GPUs, or gloo processes on a machine without GPUs), "
        "0 (one process on CPU), or 'auto' (all visible GPUs, else one CPU process)"
    )
    return parser


def _num_gpus(text):
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--num-gpus must be an integer >= 0 or 'auto', got {text!r}"
        ) from None
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
        raise UsageError(
            f"--num-gpus {args.num_gpus} but only {gpus} GPU(s) are visible. "
            f"Fix: --num-gpus {gpus} (or --num-gpus auto)."
        )
    return args.num_gpus


class UsageError(ValueError):
    """A command-line mistake; the message says how to fix it."""


def build_config(args):
    """The config ``args`` ask for (resolved name, overrides, device), checked, frozen."""
    if not args.config_file:
        raise UsageError(
            "no config given. Fix: --config NAME (a file in configs/) or --config-file PATH."
        )
    args.config_file = resolve_config_path(args.config_file)
    cfg = load_config(args.config_file, args.opts or ())
    if args.num_gpus == 0 or not torch.cuda.is_available():
        if on_cuda(cfg):
            cfg.MODEL.DEVICE = "cpu"  # configs say cuda; a machine without GPUs still runs them
    if cfg.SOLVER.AMP.ENABLED and not on_cuda(cfg):
        logger.warning(
            "SOLVER.AMP.ENABLED is ignored on %s: mixed precision is CUDA-only here.",
            cfg.MODEL.DEVICE,
        )
        cfg.SOLVER.AMP.ENABLED = False
    cfg.MOCO.CONFIG_FILE = args.config_file  # provenance: which file this merged config came from
    cfg.freeze()
    if cfg.MOCO.RUN_CHECKS:
        conversion = checks.run_checks(cfg, eval_only=args.eval_only, resume=args.resume)
        if conversion is not None:
            # Later setups (each worker process, main() after run()) read the converted file.
            args.opts = list(args.opts or ()) + ["MODEL.WEIGHTS", conversion.output_path]
    return cfg


def setup(args):
    """The frozen config for ``args``, checked, scaled for this world size (the effective
    protocol, printed), after Detectron2's ``default_setup`` (which saves it as config.yaml)."""
    cfg = build_config(args)
    cfg, line = apply_protocol(cfg, comm.get_world_size())
    default_setup(cfg, args)
    if not args.eval_only:
        logging.getLogger("detectron2.train_net").info(line)  # stdout of rank 0 and log.txt
    return cfg


# What a user can fix from the message alone: printed without a traceback by tools/train_net.py.
USER_ERRORS = (
    UsageError,
    checks.CheckError,
    FileNotFoundError,
    DensePoseMissingError,
    ProtocolError,
)


def run(args):
    """Check the config in this process, then ``launch(main, ...)``."""
    cfg = build_config(args)  # fail here, once, before any worker process starts
    apply_protocol(cfg, num_processes(args) * args.num_machines)  # a batch that cannot be split
    launch(
        main,
        num_processes(args),
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


def main(args):
    """Train (or with ``--eval-only`` evaluate) one config; returns the evaluation results."""
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(
            cfg.MODEL.WEIGHTS, resume=args.resume
        )
        results = Trainer.test(cfg, model)
        if comm.is_main_process():
            verify_results(cfg, results)
        return results
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=args.resume)
    trainer.train()
    return getattr(trainer, "_last_eval_results", None)


def cli(argv=None):
    """``tools/train_net.py``: parse, run; a user's mistake is one line on stderr, exit 2."""
    args = argument_parser().parse_args(argv)
    print("Command Line Args:", args)
    try:
        run(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(cli())
