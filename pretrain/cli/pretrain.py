"""MoCo pretraining.

  python tools/pretrain.py --config configs/pretrain/moco_v2.yaml --data PATH --out DIR [--resume
  auto] [KEY=VALUE ...]
  torchrun --nproc_per_node 8 tools/pretrain.py --config ... (one node, 8 GPUs)
  torchrun --nnodes 2 --nproc_per_node 8 --rdzv_endpoint HOST:29500 tools/pretrain.py ...
  python tools/pretrain.py --slurm --nodes 2 --gpus-per-node 8 --partition P --config ... (submitit)
  python tools/pretrain.py --slurm --gpus-per-node 0 --tasks-per-node 2 --partition cpu ... (CPU)

Overrides: dotted keys, ``optim.lr=0.06 model.K=4096`` or ``--opts optim.lr 0.06``.
"""

import argparse
import os
import sys

from pretrain.engine.config import ConfigError, dump, load_config, parse_overrides


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--config", required=True, help="recipe YAML, e.g. configs/pretrain/moco_v2.yaml"
    )
    p.add_argument(
        "--data", required=True, help="image folder, file list (.txt) or WebDataset shards"
    )
    p.add_argument(
        "--out", required=True, help="output folder (checkpoints, metrics.jsonl, tb/, plots)"
    )
    p.add_argument(
        "--resume",
        default=None,
        help="'auto' (newest valid checkpoint in --out) or a checkpoint path",
    )
    p.add_argument(
        "--force", action="store_true", help="discard an existing run in --out and start over"
    )
    p.add_argument("--print-config", action="store_true", help="print the merged config and exit")
    p.add_argument(
        "--opts", nargs="+", default=[], metavar="KEY VALUE", help="overrides as KEY VALUE pairs"
    )
    s = p.add_argument_group("SLURM (submitit)")
    s.add_argument("--slurm", action="store_true", help="submit to SLURM instead of running here")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node; 0: a CPU partition")
    s.add_argument(
        "--tasks-per-node",
        type=int,
        default=None,
        help="processes per node (default: one per GPU, or 1 with --gpus-per-node 0)",
    )
    s.add_argument("--partition", default=None)
    s.add_argument("--timeout-min", type=int, default=72 * 60)
    s.add_argument("--cpus-per-task", type=int, default=10)
    s.add_argument("--account", default=None)
    p.add_argument("overrides", nargs="*", help="KEY=VALUE overrides, e.g. optim.lr=0.06")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return run(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as e:
        # User errors (bad recipe, data path, out dir): the message says how to fix it; no
        # traceback.
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args):
    cfg = load_config(args.config, parse_overrides(args.overrides + args.opts))
    if args.print_config:
        print(dump(cfg))
        return 0
    if args.slurm:
        if not args.partition:
            raise ValueError("--slurm needs --partition NAME (sinfo lists them)")
        from pretrain.engine.slurm import submit

        job = submit(
            cfg,
            args.data,
            args.out,
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            tasks_per_node=args.tasks_per_node,
            partition=args.partition,
            timeout_min=args.timeout_min,
            cpus_per_task=args.cpus_per_task,
            account=args.account,
        )
        print(f"submitted SLURM job {job.job_id}; logs in {os.path.join(args.out, 'slurm')}")
        return 0
    from pretrain.engine.train import train

    train(cfg, args.data, args.out, resume=args.resume, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
