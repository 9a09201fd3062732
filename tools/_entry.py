"""Run a package's command-line main from ``tools/``: the one place that handles shadowing.

``python tools/pretrain.py`` puts ``tools/`` first on ``sys.path``, where ``tools/pretrain.py``
and ``tools/convert.py`` would shadow the packages of the same name. Replacing that entry with
the repository root makes the packages win, and lets the tools run from a plain checkout.
"""

import importlib
import os
import sys

TOOLS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TOOLS)


def run(module, function="main"):
    """Import ``module`` with the repository root first on ``sys.path``, call its main, exit.

    A main may return an exit code, or a result (a summary, an accuracy): that is success.
    """
    sys.path[:] = [REPO] + [
        p for p in sys.path if os.path.abspath(p or os.curdir) not in (TOOLS, REPO)
    ]
    result = getattr(importlib.import_module(module), function)()
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
