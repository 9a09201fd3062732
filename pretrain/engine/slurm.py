"""Submitting pretraining to a SLURM cluster.

Two ways, both ending in :func:`pretrain.engine.train.train` with ``--resume auto``:

1. submitit (``tools/pretrain.py --slurm --nodes 2 --gpus-per-node 8 --partition P ...``):
   one task per GPU (``--gpus-per-node 0 --tasks-per-node N`` on a CPU partition: N processes
   per node over gloo); each task exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
   MASTER_PORT from submitit's job environment. On preemption or timeout the job is
   requeued and resumes from the newest valid checkpoint.

2. plain ``srun`` in your own sbatch script (pretrain/distributed.py reads SLURM_PROCID,
   SLURM_STEP_NUM_TASKS, SLURM_LOCALID)::

       #SBATCH --nodes=2 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=10
       export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
       export MASTER_PORT=29500
       srun python tools/pretrain.py --config configs/pretrain/moco_v2.yaml \
           --data /data/imagenet/train --out runs/moco_v2 --resume auto
"""

import os


class PretrainJob:
    """A picklable callable that submitit runs once per task (and again after requeue)."""

    def __init__(self, cfg: dict, data_path, out_dir):
        self.cfg, self.data_path, self.out_dir = cfg, os.fspath(data_path), os.fspath(out_dir)

    def __call__(self):
        import submitit

        from pretrain.engine.train import train

        env = submitit.JobEnvironment()
        os.environ.update(
            RANK=str(env.global_rank),
            WORLD_SIZE=str(env.num_tasks),
            LOCAL_RANK=str(env.local_rank),
            MASTER_ADDR=env.hostnames[0],
            MASTER_PORT=os.environ.get(
                "MASTER_PORT", str(20000 + int(env.job_id.split("_")[0]) % 20000)
            ),
        )
        return train(self.cfg, self.data_path, self.out_dir, resume="auto")

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption / timeout: requeue; the new job resumes
        (resume="auto").
        """
        import submitit

        return submitit.helpers.DelayedSubmission(
            PretrainJob(self.cfg, self.data_path, self.out_dir)
        )


class SubmissionError(ValueError):
    """sbatch refused the job (bad partition, GPUs the partition has no gres for, account, QOS)."""


def sbatch_refusal(exc) -> str:
    """sbatch's own error lines from submitit's ``FailedJobError`` (its message is sbatch's stderr),
    on one line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    sbatch = [line for line in lines if line.startswith("sbatch:")]
    return " ".join(sbatch or lines) or type(exc).__name__


def submit_quietly(submit_fn):
    """Run a submitit submission; a refusal becomes ``SubmissionError`` quoting sbatch.

    submitit also prints sbatch's stderr before raising: captured here, so that the user sees the
    refusal once, in our one-line error."""
    import contextlib
    import io
    import shutil

    from submitit.core.utils import FailedJobError

    if shutil.which("sbatch") is None:
        raise SubmissionError(
            "no sbatch on PATH: --slurm submits from a SLURM login node "
            "(or set PATH to SLURM's client tools)"
        )
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            return submit_fn()
    except FailedJobError as e:
        raise SubmissionError(f"SLURM refused the job: {sbatch_refusal(e)}") from e


def job_shape(nodes: int, gpus_per_node: int, tasks_per_node=None) -> dict:
    """submitit parameters for the job's shape. One task (process) per GPU when GPUs are asked
    for, else one per node unless ``tasks_per_node`` says otherwise (CPU partitions: processes
    over gloo). ``gpus_per_node=0`` asks for no GPUs at all (no ``--gpus-per-node`` flag)."""
    if nodes < 1:
        raise ValueError(f"--nodes must be >= 1, got {nodes}")
    if gpus_per_node < 0:
        raise ValueError(f"--gpus-per-node must be >= 0 (0: a CPU partition), got {gpus_per_node}")
    tasks = tasks_per_node if tasks_per_node is not None else (gpus_per_node or 1)
    if tasks < 1:
        raise ValueError(f"--tasks-per-node must be >= 1, got {tasks}")
    shape = {"nodes": nodes, "tasks_per_node": tasks}
    if gpus_per_node:
        shape["gpus_per_node"] = gpus_per_node
    return shape


def submit(
    cfg: dict,
    data_path,
    out_dir,
    *,
    nodes: int,
    gpus_per_node: int,
    partition: str,
    tasks_per_node=None,
    timeout_min: int = 72 * 60,
    cpus_per_task: int = 10,
    account=None,
    job_name="moco",
    slurm_folder=None,
):
    """Submit one (multi-node) job; returns the submitit Job (``job.job_id``, ``job.result()``).
    Raises ``SubmissionError`` (a ValueError) with sbatch's words when SLURM refuses it."""
    import submitit

    shape = job_shape(nodes, gpus_per_node, tasks_per_node)
    folder = slurm_folder or os.path.join(os.fspath(out_dir), "slurm", "%j")
    executor = submitit.AutoExecutor(folder=folder)
    extra = {"slurm_account": account} if account else {}
    executor.update_parameters(
        name=job_name,
        cpus_per_task=cpus_per_task,
        timeout_min=timeout_min,
        slurm_partition=partition,
        slurm_signal_delay_s=120,
        **shape,
        **extra,
    )
    return submit_quietly(lambda: executor.submit(PretrainJob(cfg, data_path, out_dir)))
