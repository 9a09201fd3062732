#!/usr/bin/env python
"""Supervised baseline: train the same ResNet with labels (the demo's "supervised" row).
(``pretrain/cli/train_supervised.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.train_supervised")
