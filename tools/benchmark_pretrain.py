#!/usr/bin/env python
"""Side-by-side speed of MoCo pretraining: data path and training step, reference vs ours.
(``pretrain/cli/benchmark_pretrain.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.benchmark_pretrain")
