"""The main job on the embedded digit data: pretrain, convert, fine-tune, table (`make demo`).

    python tools/demo.py [--data DIR] [--out output/demo] [--budget full|long|quick] [--seed 0]
        [--force]

Rerunning after an interruption skips the stages that finished with the same budget and seed;
an --out holding stages of another budget or seed is refused (pass another --out, or --force).
"""

import argparse
import sys

from detection.demo.data import DemoDataError
from detection.demo.pipeline import BUDGETS, Demo, SettingsMismatch, StageFailed


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data",
        default=None,
        help="where the digit data is (generated if missing); default: data for the full "
        "budget and seed 0, data/demo_<budget>_s<seed> otherwise",
    )
    parser.add_argument("--out", default="output/demo", help="output folder of every stage")
    parser.add_argument(
        "--budget",
        default="full",
        choices=sorted(BUDGETS),
        help="full: ~16 min on 2 CPU cores, MoCo 12 epochs, one fine-tuning trial per "
        "initialisation; long: ~35 min, MoCo 36 epochs and 3 trials (the transfer verdict needs "
        "their spread); quick: a minute, for tests",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--force",
        action="store_true",
        help="delete the stage outputs in --out and redo every stage; regenerate the demo "
        "data in --data even if it holds data of other parameters",
    )
    args = parser.parse_args(argv)
    try:
        Demo(args.out, args.data, budget=args.budget, seed=args.seed, force=args.force).run()
    except (StageFailed, SettingsMismatch, DemoDataError) as e:
        sys.exit(f"demo stopped: {e}")


if __name__ == "__main__":
    main()
