"""The architecture as a check: imports run one way (pretrain <- convert <- detection), no module
imports itself through others, and the lower packages load without Detectron2."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests.paths import REPO

PACKAGES = ("pretrain", "convert", "detection")
LAYER = {"pretrain": 0, "convert": 1, "detection": 2}


def our_modules():
    """``{module name: path}`` of every module in our packages."""
    modules = {}
    for pkg in PACKAGES:
        for path in Path(REPO, pkg).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path, name, modules):
    """Our modules that ``path`` imports anywhere in it (function-level imports count too)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            # "from pkg import sub" imports the module pkg.sub when there is one.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph():
    modules = our_modules()
    return {name: imports_of(path, name, modules) for name, path in modules.items()}


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_imports_run_one_way():
    wrong = [
        f"{m} imports {t}"
        for m, targets in import_graph().items()
        for t in targets
        if LAYER[t.split(".")[0]] > LAYER[m.split(".")[0]]
    ]
    assert wrong == []


def test_pretrain_and_convert_load_without_detectron2():
    code = (
        "import importlib, pkgutil, sys\n"
        "for pkg in ('pretrain', 'convert'):\n"
        "    root = importlib.import_module(pkg)\n"
        "    for m in pkgutil.walk_packages(root.__path__, pkg + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'detectron2'))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=REPO),
        check=True,
    ).stdout
    assert out.strip() == "[]"
