"""Generate the demo data sets (digits: pretraining, classification, VOC and COCO scenes).

    python tools/make_demo_data.py --out data [--seed 0] [--force]

See ``detection/demo/data.py`` for the layout. Deterministic: the same seed gives
byte-identical files. A folder already generated with the same settings is left as is.
"""

import argparse
import sys

from detection.demo.data import DemoDataError, make_demo_data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", required=True, help="output folder (new or empty, or generated before)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace demo data already in --out (other files are kept)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="use at most this many digit scans (tiny versions)"
    )
    parser.add_argument(
        "--n-det-trainval", type=int, default=300, help="detection trainval scenes (default 300)"
    )
    parser.add_argument(
        "--n-det-test", type=int, default=100, help="detection test scenes (default 100)"
    )
    args = parser.parse_args(argv)
    try:
        paths = make_demo_data(
            args.out,
            args.seed,
            force=args.force,
            limit=args.limit,
            n_det_trainval=args.n_det_trainval,
            n_det_test=args.n_det_test,
        )
    except DemoDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, path in paths.items():
        print(f"  {key:20s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
