#!/usr/bin/env python
"""Convert ResNet pretraining checkpoints to Detectron2 weights. See ``--help`` and convert/cli.py."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from convert.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
