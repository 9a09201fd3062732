"""The job shape ``tools/pretrain.py --slurm`` asks for (no cluster needed)."""

import pytest

from pretrain.engine.slurm import job_shape, sbatch_refusal


def test_tasks_follow_gpus_and_a_cpu_partition_gets_one_task():
    assert job_shape(2, 8) == {"nodes": 2, "tasks_per_node": 8, "gpus_per_node": 8}
    assert job_shape(1, 0) == {"nodes": 1, "tasks_per_node": 1}  # no GPU request at all
    assert job_shape(1, 0, tasks_per_node=2) == {"nodes": 1, "tasks_per_node": 2}
    assert job_shape(1, 4, tasks_per_node=1) == {
        "nodes": 1,
        "tasks_per_node": 1,
        "gpus_per_node": 4,
    }


@pytest.mark.parametrize(
    "args,message",
    [((0, 8), "--nodes"), ((1, -1), "--gpus-per-node"), ((1, 0, 0), "--tasks-per-node")],
)
def test_bad_shapes_are_errors_naming_the_flag(args, message):
    with pytest.raises(ValueError, match=message):
        job_shape(*args)


def test_sbatch_refusal_keeps_sbatchs_lines_on_one_line():
    first = "sbatch: error: invalid partition specified: nope"
    second = "sbatch: error: Batch job submission failed: Invalid partition name specified"
    err = RuntimeError(f"{first}\n{second}\n")
    assert sbatch_refusal(err) == f"{first} {second}"
