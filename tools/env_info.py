#!/usr/bin/env python
"""What this environment can run: Python, torch, devices, which Detectron2 and what it lacks.
(``detection/cli/env_info.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("detection.cli.env_info")
