#!/usr/bin/env python
"""Fine-tune / evaluate a Detectron2 model with the MoCo transfer configs.
(``detection/cli/train_net.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.train_net", "cli")
