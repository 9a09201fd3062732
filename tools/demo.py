#!/usr/bin/env python
"""The main job on the embedded digit data: pretrain, convert, fine-tune, table (`make demo`).

    python tools/demo.py [--data data] [--out output/demo] [--budget full|quick]

Rerunning after an interruption skips the stages that finished.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/ would shadow packages

from detection.demo_pipeline import BUDGETS, Demo, StageFailed  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data", help="where the digit data is (generated if missing)")
    parser.add_argument("--out", default="output/demo", help="output folder of every stage")
    parser.add_argument("--budget", default="full", choices=sorted(BUDGETS),
                        help="full: ~15 min on 2 CPU cores; quick: a minute, for tests")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        Demo(args.out, args.data, budget=args.budget, seed=args.seed).run()
    except StageFailed as e:
        sys.exit(f"demo stopped: {e}")


if __name__ == "__main__":
    main()
