"""`make demo` end to end at a tiny budget: every stage runs our real tools, the table files
appear, and a rerun skips the finished stages."""

import csv
import json
import os
import re
import subprocess
import sys

from PIL import Image

from tests.paths import REPO


def run_demo(data, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [
            sys.executable,
            "tools/demo.py",
            "--data",
            str(data),
            "--out",
            str(out),
            "--budget",
            "quick",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def assert_started_from(run_folder, weights):
    """The run's manifest names ``weights`` (None: random init), and Detectron2's own log shows it
    loaded them: every ResNet tensor found (only the new FPN/RPN/ROI heads missing), none unused."""
    manifest = json.loads((run_folder / "run.json").read_text())
    assert manifest["status"] == "done" and manifest["weights"] == (
        "" if weights is None else str(weights)
    )
    log = re.sub(
        r"\x1b\[[0-9;]*m", "", (run_folder / "log.txt").read_text()
    )  # fvcore colours key names
    if weights is None:
        assert "No checkpoint found. Initializing model from scratch" in log
        return
    assert f"[DetectionCheckpointer] Loading from {weights} ..." in log
    assert "Reading a file from 'moco-transfer'" in log  # our converter's pickle
    assert "No checkpoint found" not in log and "not used by the model" not in log
    missing = log.split("Some model parameters or buffers are not found in the checkpoint:\n", 1)[1]
    missing = missing.split("\n[", 1)[0].splitlines()  # up to the next log record
    assert missing and all(not name.startswith("backbone.bottom_up") for name in missing), missing
    assert any(name.startswith("backbone.fpn_") for name in missing)


def test_quick_demo_produces_the_transfer_table_and_resumes(tmp_path, repo_stays_clean):
    data, out = tmp_path / "data", tmp_path / "demo"
    proc = run_demo(data, out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    table = out / "table"
    md = (table / "transfer_table.md").read_text()
    for init in ("moco", "supervised", "random"):
        assert f"| {init} |" in md
    with open(table / "transfer_table.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["init"] for r in rows} >= {"moco", "supervised", "random"}
    assert (table / "transfer_table.tex").exists()
    # under the rows, what each pretraining learned, from its own metrics (detection/demo/summary)
    assert "## What the pretrainings learned (budget 'quick')" in md
    assert "- supervised: val top-1 " in md and "- MoCo: kNN top-1 " in md
    assert "MoCo's query encoder at the end: q.q' " in md
    assert "from 1 trial: no spread measured, so no verdict (--budget long" in md
    Image.open(table / "bars_digits_R18_FPN.png").verify()
    Image.open(table / "moco_loss_curve.png").verify()
    # Each fine-tuning run evaluated on the digit-scene test split and left its numbers.
    for init in ("moco", "supervised", "random"):
        results = json.loads(
            (
                out / "transfer" / "digits_R18_FPN" / init / "trial0" / "eval_results.json"
            ).read_text()
        )
        assert set(results["digits_voc_test"]["bbox"]) >= {"AP", "AP50", "AP75"}
    # Both pretrained detectors really started from converted weights, random from nothing.
    for init in ("moco", "supervised"):
        assert (out / "weights" / f"{init}_r18_fpn.pkl").stat().st_size > 1_000_000
        assert_started_from(
            out / "transfer" / "digits_R18_FPN" / init / "trial0",
            out / "weights" / f"{init}_r18_fpn.pkl",
        )
    assert_started_from(out / "transfer" / "digits_R18_FPN" / "random" / "trial0", None)

    again = run_demo(data, out)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("already done, skipping") == 6
