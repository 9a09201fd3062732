#!/usr/bin/env python
"""Linear classification protocol on a frozen pretrained backbone (MoCo's main_lincls.py).
(``pretrain/cli/lincls.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.lincls")
