"""`tools/pretrain.py --slurm` on the real cluster: CPU jobs finish with checkpoints, a requeued
(preempted) job resumes to the same weights as an uninterrupted one, a 2-task job trains as two
gloo processes with shuffling BN across them, and sbatch's refusals are one-line errors."""

import os
import re
import subprocess
import sys
import time

import pytest
import torch

from pretrain.io import safe_torch_load
from tests.paths import REPO
from tests.slurm.tiny_runs import PRETRAIN_OVERRIDES

pytestmark = pytest.mark.slurm

TINY = PRETRAIN_OVERRIDES


def pretrain(data, out, *flags, overrides=()):
    """Submits with the command line a user runs; -> (returncode, job id or None, stderr)."""
    cmd = [
        sys.executable,
        "tools/pretrain.py",
        "--slurm",
        "--partition",
        "debug",
        "--cpus-per-task",
        "1",
        "--timeout-min",
        "15",
        *flags,
        "--config",
        "configs/pretrain/demo.yaml",
        "--data",
        str(data),
        "--out",
        str(out),
        *TINY,
        *overrides,
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    m = re.search(r"submitted SLURM job (\d+)", r.stdout)
    return r.returncode, m and m.group(1), r.stderr


def results(out, job_id, tasks=1):
    import submitit

    job = submitit.SlurmJob(
        folder=os.path.join(out, "slurm", "%j"), job_id=job_id, tasks=range(tasks)
    )
    return job.results()


def job_log(out, job_id, task=0):
    return (out / "slurm" / job_id / f"{job_id}_{task}_log.out").read_text()


def weights(path):
    return safe_torch_load(path)["state_dict"]


def test_cpu_job_finishes_and_a_requeued_one_resumes_to_the_same_weights(
    slurm_cluster, tiny_demo_data, tmp_path
):
    data = tiny_demo_data["unlabeled_root"]
    straight, preempted = tmp_path / "straight", tmp_path / "preempted"
    # --gpus-per-node 0 without --tasks-per-node: one task (the default must not be 0 tasks).
    rc, a, err = pretrain(data, straight, "--gpus-per-node", "0", overrides=["max_iters=24"])
    assert rc == 0 and a, err
    rc, b, err = pretrain(data, preempted, "--gpus-per-node", "0", overrides=["max_iters=24"])
    assert rc == 0 and b, err

    # Preempt b mid-way, once it has written its first checkpoint (every 4 of its 24 steps).
    first = preempted / "checkpoint_0000004.pth"
    deadline = time.monotonic() + 240
    while not first.exists():
        assert time.monotonic() < deadline, f"no checkpoint from {b}: {slurm_cluster.states(b)}"
        time.sleep(0.2)
    slurm_cluster.run("scontrol", "requeue", b)

    assert slurm_cluster.wait(a) == "COMPLETED", job_log(straight, a)[-3000:]
    assert slurm_cluster.wait(b) == "COMPLETED", job_log(preempted, b)[-3000:]
    # sacct saw the preemption: the first run of b is listed as REQUEUED.
    assert slurm_cluster.states(b, duplicates=True)[:-1] == ["REQUEUED"]

    (done_a,), (done_b,) = results(straight, a), results(preempted, b)
    assert done_a["global_step"] == done_b["global_step"] == 24
    assert done_a["resumed_from"] is None
    assert done_b["resumed_from"], "the requeued job started again from scratch"
    resumed_step = int(re.search(r"checkpoint_(\d+)\.pth", done_b["resumed_from"]).group(1))
    assert 4 <= resumed_step < 24, done_b["resumed_from"]  # really resumed mid-way, not rerun
    assert "on cpu x1" in job_log(straight, a)

    wa = weights(straight / "checkpoint_0000024.pth")
    wb = weights(preempted / "checkpoint_0000024.pth")
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name
    # The weights moved: equal runs that learned nothing would prove nothing.
    start = weights(straight / "checkpoint_0000004.pth")
    conv1 = "module.encoder_q.conv1.weight"
    assert not torch.equal(start[conv1], wa[conv1])


def test_two_task_job_trains_as_two_gloo_processes_with_shuffling_bn(
    slurm_cluster, tiny_demo_data, tmp_path
):
    out = tmp_path / "ddp"
    # model.shuffle=ddp: the key batch is shuffled across processes; a one-process run refuses it.
    rc, job, err = pretrain(
        tiny_demo_data["unlabeled_root"],
        out,
        "--gpus-per-node",
        "0",
        "--tasks-per-node",
        "2",
        overrides=["max_iters=4", "model.shuffle=ddp"],
    )
    assert rc == 0 and job, err
    assert slurm_cluster.wait(job) == "COMPLETED", job_log(out, job)[-3000:]
    rank0, rank1 = results(out, job, tasks=2)
    assert rank0["global_step"] == rank1["global_step"] == 4
    assert "on cpu x2" in job_log(out, job) and "batch 16" in job_log(out, job)  # 8 per process
    ckpt = safe_torch_load(out / "checkpoint_0000004.pth")
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 2


def test_sbatch_refusals_are_one_line_errors_quoting_sbatch(
    slurm_cluster, tiny_demo_data, tmp_path
):
    data = tiny_demo_data["unlabeled_root"]
    # A GPU request on a partition without GPU gres.
    rc, job, err = pretrain(data, tmp_path / "gpu", "--gpus-per-node", "1")
    assert (rc, job) == (2, None)
    assert err.strip().splitlines() == [
        "error: SLURM refused the job: sbatch: error: Invalid generic resource (gres) specification"
    ]
    # A partition that does not exist.
    rc, job, err = pretrain(data, tmp_path / "nope", "--gpus-per-node", "0", "--partition", "nope")
    assert (rc, job) == (2, None)
    assert err.strip().splitlines() == [
        "error: SLURM refused the job: sbatch: error: invalid partition specified: nope "
        "sbatch: error: Batch job submission failed: Invalid partition name specified"
    ]
