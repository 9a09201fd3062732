#!/usr/bin/env python
"""Run a transfer grid: configs × weights × trials, each run into ROOT/<task>/<init>/trial<N>/.
(``detection/cli/run_transfer.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.run_transfer")
