#!/usr/bin/env python
"""MoCo pretraining. (``pretrain/cli/pretrain.py``; ``--help`` for usage)."""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.pretrain")
