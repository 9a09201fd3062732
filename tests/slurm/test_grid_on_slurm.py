"""`tools/run_transfer.py --slurm` on the real cluster: a 2-config x 2-init x 2-trial grid of the
demo detector runs as a job array; jobs cancelled with scancel (one waiting, found dead through
sacct; one training) are rerun by the next call, finished runs are not; the table tool reads the
grid; a refused sbatch marks the runs failed."""

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from tests.paths import REPO
from tests.slurm.tiny_runs import DETECTOR_OPTS, PRETRAIN_OVERRIDES

pytestmark = pytest.mark.slurm

TOOL_ENV = dict(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def tool(script, *args, env=None, timeout=300):
    return subprocess.run(
        [sys.executable, f"tools/{script}", *map(str, args)],
        cwd=REPO,
        env=dict(os.environ, **TOOL_ENV, **(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def moco_weights(tiny_demo_data, tmp_path_factory):
    """A real (tiny, 2-step) MoCo checkpoint converted to Detectron2 FPN weights, made here."""
    out = tmp_path_factory.mktemp("moco")
    r = tool(
        "pretrain.py",
        "--config",
        "configs/pretrain/demo.yaml",
        "--data",
        tiny_demo_data["unlabeled_root"],
        "--out",
        out / "run",
        *PRETRAIN_OVERRIDES,
        "max_iters=2",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    r = tool(
        "convert.py",
        out / "run" / "checkpoint_0000002.pth",
        out / "moco_fpn.pkl",
        "--target",
        "fpn",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out / "moco_fpn.pkl"


def write_grid(folder, root, moco_weights):
    # The second config: the demo detector on smaller scenes (its own file, as a user's would be).
    small = folder / "digits_R18_FPN_small.yaml"
    small.write_text(
        yaml.safe_dump(
            {
                "_BASE_": os.path.join(REPO, "configs", "Demo", "demo_digits_R18_FPN_base.yaml"),
                "INPUT": {"MIN_SIZE_TRAIN": [128], "MIN_SIZE_TEST": 128},
            }
        )
    )
    grid = {
        "out": str(root),
        "trials": 2,
        "opts": DETECTOR_OPTS,
        "tasks": {
            "digits": {"config": "demo_digits_R18_FPN_{variant}"},
            "digits_small": {"config": str(small)},
        },
        "inits": {"moco": {"weights": str(moco_weights)}, "random": {"weights": ""}},
    }
    path = folder / "grid.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def run_grid(grid, data, *flags):
    return tool(
        "run_transfer.py",
        "--grid",
        grid,
        "--slurm",
        "--partition",
        "debug",
        "--cpus-per-task",
        "1",
        "--timeout-min",
        "15",
        *flags,
        env={"DEMO_DATA": data},
    )


def manifests(root):
    return {
        os.path.relpath(os.path.dirname(p), root): json.loads(open(p).read())
        for p in sorted(str(p) for p in root.glob("*/*/trial*/run.json"))
    }


def test_grid_runs_a_cancelled_job_is_rerun_and_the_table_reads_it(
    slurm_cluster, tiny_demo_data, moco_weights, tmp_path
):
    root = tmp_path / "transfer"
    grid = write_grid(tmp_path, root, moco_weights)
    t0 = time.monotonic()
    r = run_grid(grid, tiny_demo_data["root"], "--gpus-per-node", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "8 job(s) submitted, 0 run(s) skipped" in r.stdout
    runs = manifests(root)
    assert len(runs) == 8 and all(m["job_id"] for m in runs.values())

    # One run cancelled before it starts: its run.json says "submitted" for ever, only sacct can
    # tell that no job will run it (2 CPUs: the array's last tasks wait while 2 others run).
    waiting = max(runs, key=lambda k: int(runs[k]["job_id"].split("_")[1]))
    # (sacct lists a waiting array task only inside its range, e.g. 5_[2-7]; squeue names it.)
    squeue = slurm_cluster.run("squeue", "-h", "-j", runs[waiting]["job_id"], "-o", "%T").split()
    assert squeue == ["PENDING"]
    slurm_cluster.run("scancel", runs[waiting]["job_id"])
    # One killed while it trains (the job itself may record the kill, or leave "running" behind).
    deadline = time.monotonic() + 300
    while not (running := [k for k, m in manifests(root).items() if m["status"] == "running"]):
        assert time.monotonic() < deadline, "no run started"
        time.sleep(0.5)
    killed = running[0]
    slurm_cluster.run("scancel", manifests(root)[killed]["job_id"])
    finals = {
        k: slurm_cluster.wait(m["job_id"], timeout=600) for k, m in runs.items() if k != waiting
    }
    grid_s = time.monotonic() - t0
    assert finals.pop(killed) == "CANCELLED"
    # The waiting task is gone from the queue, and sacct does not list it (SLURM 22.05).
    squeue = slurm_cluster.run("squeue", "-h", "-j", runs[waiting]["job_id"], check=False)
    assert squeue.strip() == ""
    assert slurm_cluster.states(runs[waiting]["job_id"]) == []
    assert set(finals.values()) == {"COMPLETED"}, finals
    before = manifests(root)
    assert before[waiting]["status"] == "submitted"
    assert all(before[k]["status"] == "done" for k in finals), {
        k: before[k]["error"] for k in finals
    }

    # What the next call will do, and why: sacct says the waiting run's job is gone.
    r = run_grid(grid, tiny_demo_data["root"], "--gpus-per-node", "0", "--dry-run")
    assert r.returncode == 0, r.stderr[-3000:]
    (plan_line,) = [
        line for line in r.stdout.splitlines() if line.startswith("run ") and waiting in line
    ]
    assert "but SLURM says CANCELLED" in plan_line
    assert "8 runs planned, 2 to run, 6 skipped" in r.stdout
    # The same command again: the two dead runs are rerun, the 6 finished ones are not.
    r = run_grid(grid, tiny_demo_data["root"], "--gpus-per-node", "0")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 job(s) submitted, 6 run(s) skipped" in r.stdout
    for victim in (waiting, killed):
        rerun_job = manifests(root)[victim]["job_id"]
        assert rerun_job != before[victim]["job_id"]
        assert slurm_cluster.wait(rerun_job, timeout=300) == "COMPLETED"
    after = manifests(root)
    assert after[waiting]["status"] == after[killed]["status"] == "done"
    assert after[killed]["attempt"] == 2 and after[waiting]["attempt"] == 1  # it never ran before
    for k in finals:
        assert after[k] == before[k], k  # untouched: same attempt, job, finish time

    # A third call has nothing left to do.
    r = run_grid(grid, tiny_demo_data["root"], "--gpus-per-node", "0")
    assert r.returncode == 0 and "0 job(s) submitted, 8 run(s) skipped" in r.stdout, r.stdout

    table = tool(
        "transfer_table.py",
        root,
        "--baseline",
        "random",
        "--metrics",
        "AP50,AP",
        "--no-plots",
        "--reference",
        "",
    )
    assert table.returncode == 0, table.stderr
    rows = [
        line
        for line in table.stdout.splitlines()
        if line.startswith("| moco") or line.startswith("| random")
    ]
    assert len(rows) == 4, table.stdout  # 2 tasks x 2 inits
    assert "warning:" not in table.stderr, table.stderr  # no missing or unfinished run
    print(f"grid of 8 on SLURM: {grid_s:.0f} s until all jobs ended")


def test_a_refused_grid_marks_its_runs_failed(
    slurm_cluster, tiny_demo_data, moco_weights, tmp_path
):
    root = tmp_path / "transfer"
    grid = write_grid(tmp_path, root, moco_weights)
    r = run_grid(grid, tiny_demo_data["root"], "--gpus-per-node", "1")  # no GPU gres on debug
    assert r.returncode == 2
    # (torch's import-time FutureWarnings aside: they are not ours)
    assert "Traceback" not in r.stderr, r.stderr
    (line,) = [
        x for x in r.stderr.strip().splitlines() if "Warning" not in x and "warnings.warn" not in x
    ]
    assert line.startswith(
        "error: SLURM refused the submission of 8 job(s): sbatch: error: "
        "Invalid generic resource (gres) specification"
    ), line
    runs = manifests(root)
    assert len(runs) == 8
    for m in runs.values():
        assert m["status"] == "failed" and m["job_id"] is None
        assert m["error"].startswith(
            "SLURM submission failed: sbatch: error: Invalid generic resource"
        )
