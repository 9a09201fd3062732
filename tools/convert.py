#!/usr/bin/env python
"""Convert ResNet pretraining checkpoints to Detectron2 weights (``detection/cli/convert.py``;
``--help``).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.convert")
