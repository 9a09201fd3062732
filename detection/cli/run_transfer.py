"""Run a transfer grid: configs × weights × trials, each run into ROOT/<task>/<init>/trial<N>/.

    tools/run_transfer.py --configs 'voc0712_R50_C4_24k_{variant}' \\
        --weights supervised moco_v2_200ep:moco=out/moco_v2.pkl random= \\
        --trials 5 --out output/transfer --num-gpus 8 [--dry-run]
    tools/run_transfer.py --grid grid.yaml --slurm --partition learnlab --gpus-per-node 8

Finished runs (run.json "done" with results) are skipped, so rerunning the same command resumes
the grid; failed runs are retried. A finished run made with other settings (config, weights, seed,
opts) stops the grid with a list of what changed: pass --force or use another --out. Runs marked
running/submitted are checked (their process here, or their SLURM job through sacct); those that
cannot be checked are skipped unless --retry-stale. Put --opts last: everything after it goes to
every run as Detectron2 KEY VALUE pairs. Then: tools/transfer_table.py ROOT.
"""

import argparse
import os
import shlex
import sys

from detection.transfer.grid import (
    DEFAULT_TRAIN_CMD,
    ChangedRunsError,
    SubmissionError,
    build_plan,
    load_grid,
    parse_weights,
    run_grid,
    slurm_parameters,
    tasks_from_configs,
)


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    src = p.add_argument_group("grid (a file, or flags)")
    src.add_argument("--grid", help="grid YAML: tasks, inits, trials, seed_base, out, opts")
    src.add_argument(
        "--configs",
        nargs="+",
        default=[],
        metavar="[TASK=]CONFIG",
        help="Detectron2 configs (paths or names under configs/); '{variant}' in it is "
        "replaced per init (voc0712_R50_C4_24k_{variant} -> ..._moco.yaml); the task "
        "name is TASK or the file stem without '_{variant}'",
    )
    src.add_argument(
        "--weights",
        nargs="+",
        default=[],
        metavar="INIT[:VARIANT][=WEIGHTS]",
        help="inits: moco=out/moco.pkl (a path or URL), random= (random init), supervised "
        "(no '=': the config's own MODEL.WEIGHTS); VARIANT (default: INIT) fills "
        "'{variant}', e.g. moco_v2_800ep:moco=out/v2_800.pkl",
    )
    src.add_argument(
        "--trials", type=int, default=None, help="trials per task × init (flags: default 5)"
    )
    src.add_argument("--seed-base", type=int, default=0, help="SEED = seed_base + trial")
    src.add_argument("--out", help="ROOT of the run folders (overrides the grid file's 'out')")
    run = p.add_argument_group("running")
    run.add_argument(
        "--num-gpus",
        default=None,
        help="passed to the training command for local runs "
        "(tools/train_net.py: N, 0 = one CPU process, auto); SLURM runs use --gpus-per-node",
    )
    run.add_argument(
        "--train-cmd",
        default=None,
        help=f"training command (default: {' '.join(DEFAULT_TRAIN_CMD)})",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="pass --resume to retried runs (continue from their last checkpoint)",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="rerun every run that has a folder: finished, "
        "changed, failed and in-progress ones (old folders are moved to ROOT/_replaced/, not "
        "deleted; SLURM jobs still running are not cancelled: scancel them first)",
    )
    run.add_argument(
        "--retry-stale",
        action="store_true",
        help="also retry runs marked running/submitted "
        "whose process or SLURM job cannot be confirmed alive (e.g. a job on another host, "
        "no sacct here); finished runs are never rerun by this",
    )
    run.add_argument(
        "--dry-run", action="store_true", help="print the plan and commands, run nothing"
    )
    run.add_argument("--quiet", action="store_true", help="training output to the run logs only")
    sl = p.add_argument_group("SLURM (submitit): one single-node job per run")
    sl.add_argument("--slurm", action="store_true")
    sl.add_argument("--partition")
    sl.add_argument("--gpus-per-node", type=int, default=8)
    sl.add_argument("--cpus-per-task", type=int, default=10)
    sl.add_argument("--timeout-min", type=int, default=72 * 60)
    sl.add_argument("--mem-gb", type=float, default=None)
    sl.add_argument("--constraint", default=None)
    p.add_argument(
        "--opts",
        nargs=argparse.REMAINDER,
        default=[],
        help="LAST: Detectron2 KEY VALUE pairs added to every run",
    )
    args = p.parse_args(argv)

    train_cmd = shlex.split(args.train_cmd) if args.train_cmd else list(DEFAULT_TRAIN_CMD)
    try:
        if args.grid:
            if args.configs or args.weights:
                raise ValueError("give either --grid or --configs/--weights, not both")
            plan, root = load_grid(
                args.grid, out=args.out, trials=args.trials, extra_opts=args.opts
            )
        else:
            if not args.out:
                raise ValueError("--out ROOT is required without --grid")
            plan = build_plan(
                tasks_from_configs(args.configs),
                parse_weights(args.weights),
                5 if args.trials is None else args.trials,  # --trials 0 is an error, not 5
                args.out,
                args.seed_base,
                args.opts,
            )
            root = os.path.abspath(args.out)
        slurm = None
        if args.slurm:
            if not args.partition:
                raise ValueError("--slurm needs --partition NAME (sinfo lists them)")
            slurm = slurm_parameters(
                args.partition,
                args.gpus_per_node,
                args.cpus_per_task,
                args.timeout_min,
                args.mem_gb,
                args.constraint,
            )
            slurm["folder"] = os.path.join(root, "_submitit")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        return run_grid(
            plan,
            root,
            train_cmd,
            args.num_gpus,
            args.resume,
            args.force,
            args.dry_run,
            echo=not args.quiet,
            slurm=slurm,
            print_fn=lambda s: print(s, flush=True),
            retry_stale=args.retry_stale,
        )
    except (FileNotFoundError, ChangedRunsError, SubmissionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; the current run is marked failed. Rerun the same command to continue "
            "(finished runs are skipped; --resume continues from checkpoints).",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
