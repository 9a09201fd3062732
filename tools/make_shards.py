#!/usr/bin/env python
"""Pack an image folder or a file list into WebDataset shards for pretraining.
(``pretrain/cli/make_shards.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.make_shards")
