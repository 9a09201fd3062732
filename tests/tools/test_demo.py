"""`make demo` end to end at a tiny budget: every stage runs our real tools, the table files
appear, and a rerun skips the finished stages."""
import csv
import json
import os
import subprocess
import sys

from PIL import Image

from tests.paths import REPO


def run_demo(data, out):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "tools/demo.py", "--data", str(data), "--out", str(out),
                           "--budget", "quick"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)


def test_quick_demo_produces_the_transfer_table_and_resumes(tmp_path):
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
    Image.open(table / "bars_digits_R18_FPN.png").verify()
    Image.open(table / "moco_loss_curve.png").verify()
    # Each fine-tuning run evaluated on the digit-scene test split and left its numbers.
    for init in ("moco", "supervised", "random"):
        results = json.loads((out / "transfer" / "digits_R18_FPN" / init / "trial0" / "eval_results.json").read_text())
        assert set(results["digits_voc_test"]["bbox"]) >= {"AP", "AP50", "AP75"}
    # Both pretrained detectors really started from converted weights.
    for init in ("moco", "supervised"):
        assert (out / "weights" / f"{init}_r18_fpn.pkl").stat().st_size > 1_000_000

    again = run_demo(data, out)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    assert again.stdout.count("already done, skipping") == 6
