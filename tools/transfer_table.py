#!/usr/bin/env python
"""Transfer table from Detectron2 output folders, in the MoCo paper's style.
(``detection/cli/transfer_table.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.transfer_table")
