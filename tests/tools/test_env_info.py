"""tools/env_info.py, run as a user runs it, reports this environment truthfully."""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import torch

from tests.paths import REPO

TOOL = os.path.join(REPO, "tools", "env_info.py")


def _run(*args):
    proc = subprocess.run(
        [sys.executable, TOOL, *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _expected_variant():
    """The variant, probed independently of the code under test: does ``_C`` load?"""
    try:
        from detectron2 import _C  # noqa: F401

        return "official compiled"
    except ImportError:
        pass
    try:
        importlib.metadata.distribution("sal-detectron2")
        return "pure Python (registry sal-detectron2)"
    except importlib.metadata.PackageNotFoundError:
        return "pure Python (other)"


def test_text_report_names_torch_and_the_detectron2_variant(repo_stays_clean):
    # "key  value" lines: keys have single spaces, the value starts after two or more.
    lines = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1)
        for line in _run().splitlines()
        if not line.startswith(" ")
    )
    assert lines["torch"].split()[0] == torch.__version__
    variant = _expected_variant()
    assert lines["detectron2 variant"] == variant
    assert lines["CUDA available"] == str(torch.cuda.is_available())
    if variant != "official compiled":
        assert "COCOeval_opt" in lines["disabled without _C"]


def test_json_report_parses_and_agrees(repo_stays_clean):
    env = json.loads(_run("--json"))
    assert env["torch"]["version"] == torch.__version__
    assert env["cuda"]["device_count"] == (
        torch.cuda.device_count() if torch.cuda.is_available() else 0
    )
    d2 = env["detectron2"]
    assert d2["variant"] == _expected_variant()
    assert d2["compiled_ops"] == (d2["variant"] == "official compiled")
    assert len(d2["disabled_features"]) == (0 if d2["compiled_ops"] else 3)
    dp = env["densepose"]
    assert dp["installed"] or "projects/DensePose" in dp["install"]
    for name in ("fvcore", "pycocotools", "lvis", "cityscapesscripts", "webdataset", "opencv"):
        assert name in env["packages"]
    assert env["packages"]["pycocotools"]["version"] == importlib.metadata.version("pycocotools")
