#!/usr/bin/env python
"""kNN accuracy of a pretrained backbone (a quick proxy for the linear protocol).
(``pretrain/cli/knn.py``; ``--help`` for usage).
"""

if __name__ == "__main__":  # not when a spawned worker process re-imports this file
    from _entry import run

    run("pretrain.cli.knn")
