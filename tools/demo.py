#!/usr/bin/env python
"""The main job on the embedded digit data: pretrain, convert, fine-tune, table (`make demo`).
(``detection/cli/demo.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.demo")
