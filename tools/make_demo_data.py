#!/usr/bin/env python
"""Generate the demo data sets (digits: pretraining, classification, VOC and COCO scenes).
(``detection/cli/make_demo_data.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.make_demo_data")
