"""Submitting pretraining to a SLURM cluster.

Two ways, both ending in :func:`pretrain.engine.train.train` with ``--resume auto``:

1. submitit (``tools/pretrain.py --slurm --nodes 2 --gpus-per-node 8 --partition P ...``):
   one task per GPU; each task exports RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
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
            RANK=str(env.global_rank), WORLD_SIZE=str(env.num_tasks), LOCAL_RANK=str(env.local_rank),
            MASTER_ADDR=env.hostnames[0], MASTER_PORT=os.environ.get("MASTER_PORT", str(20000 + int(env.job_id.split("_")[0]) % 20000)),
        )
        return train(self.cfg, self.data_path, self.out_dir, resume="auto")

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on preemption / timeout: requeue; the new job resumes (resume="auto")."""
        import submitit

        return submitit.helpers.DelayedSubmission(PretrainJob(self.cfg, self.data_path, self.out_dir))


def submit(cfg: dict, data_path, out_dir, *, nodes: int, gpus_per_node: int, partition: str,
           timeout_min: int = 72 * 60, cpus_per_task: int = 10, account=None, job_name="moco", slurm_folder=None):
    """Submit one multi-node job; returns the submitit Job (``job.job_id``, ``job.result()``)."""
    import submitit

    folder = slurm_folder or os.path.join(os.fspath(out_dir), "slurm", "%j")
    executor = submitit.AutoExecutor(folder=folder)
    extra = {"slurm_account": account} if account else {}
    executor.update_parameters(
        name=job_name, nodes=nodes, tasks_per_node=gpus_per_node, gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task, timeout_min=timeout_min, slurm_partition=partition,
        slurm_signal_delay_s=120, **extra,
    )
    return executor.submit(PretrainJob(cfg, data_path, out_dir))
