#!/usr/bin/env python
"""Print what this environment can run (torch, devices, Detectron2 variant and its gaps).

    python tools/env_info.py [--json]
"""
import argparse
import json
import os
import sys

# `python tools/x.py` puts tools/ first on sys.path, where tools/pretrain.py etc. would shadow
# the packages of the same name: the repository root goes in front.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.env_info import collect_env, format_env  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    env = collect_env()
    print(json.dumps(env, indent=2, sort_keys=True) if args.json else format_env(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
