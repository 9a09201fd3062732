"""Who am I in the launch: torchrun's variables, srun's, or a lone process."""

from pretrain.distributed import launch_env


def test_torchrun_variables_win():
    env = {
        "RANK": "3",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "SLURM_STEP_NUM_TASKS": "2",
        "SLURM_PROCID": "0",
    }
    assert launch_env(env) == (3, 8, 1)


def test_srun_task_reads_its_step():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_STEP_NUM_TASKS": "16",
        "SLURM_LOCALID": "5",
        "SLURM_NTASKS": "16",
    }
    assert launch_env(env) == (5, 16, 5)


def test_plain_python_inside_an_allocation_is_one_process():
    # salloc -n 8 / an sbatch script: SLURM_NTASKS describes the allocation, not this process.
    env = {"SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_JOB_ID": "42"}
    assert launch_env(env) == (0, 1, 0)
    assert launch_env({}) == (0, 1, 0)
