"""Process-group set-up and the few collectives MoCo needs.

Launchers: ``torchrun`` (RANK / WORLD_SIZE / LOCAL_RANK), ``srun`` (SLURM_PROCID /
SLURM_STEP_NUM_TASKS / SLURM_LOCALID, with MASTER_ADDR / MASTER_PORT exported by the job
script) and submitit (pretrain/slurm.py sets the torchrun variables). A plain
``python`` run is one process without a process group.
"""

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def choose_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    if preference == "cpu":
        return torch.device("cpu")
    if preference in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if preference == "cuda":
            raise RuntimeError(
                "device=cuda was asked for but torch sees no CUDA device; use device=auto or cpu"
            )
        return torch.device("cpu")
    raise ValueError(f"device must be auto, cpu or cuda, got {preference!r}")


def launch_env(env=None):
    """-> (rank, world size, local rank) as torchrun (RANK, ...) or srun (SLURM_*) describe them.

    SLURM's size is the job step's (SLURM_STEP_NUM_TASKS, set by srun for the tasks it starts),
    not the allocation's SLURM_NTASKS: a plain ``python`` in an salloc/sbatch shell of an
    8-task allocation is one process, not rank 0 of 8 waiting for the other 7.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        return int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0))
    if "SLURM_STEP_NUM_TASKS" in env:
        return (
            int(env.get("SLURM_PROCID", 0)),
            int(env["SLURM_STEP_NUM_TASKS"]),
            int(env.get("SLURM_LOCALID", 0)),
        )
    return 0, 1, 0


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group the launcher describes (or run alone). NCCL on GPU, gloo on CPU."""
    rank, world_size, local_rank = launch_env()
    dev = choose_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise RuntimeError(
                    f"{world_size} processes but {var} is not set: launch with torchrun, "
                    "or export MASTER_ADDR/MASTER_PORT in the srun job script (see "
                    "pretrain/slurm.py)"
                )
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo",
            rank=rank,
            world_size=world_size,
            device_id=dev if dev.type == "cuda" else None,
        )
    return DistContext(rank, world_size, local_rank, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


@torch.no_grad()
def all_gather_cat(x: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors of all ranks along dim 0, in rank order (no gradient)."""
    if world_size() == 1:
        return x
    out = torch.empty(
        (world_size() * x.shape[0],) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device
    )
    _gather_into(out, x.contiguous())
    return out


_size_group = None
# torch >= 2.14 renamed all_gather_into_tensor (and warns on the old name).
_gather_into = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _cpu_group():
    """A gloo group over all ranks (WORLD itself under gloo): host values travel without a device.

    Created on first use, which every rank reaches together (new_group is collective)."""
    global _size_group
    if _size_group is None:
        _size_group = (
            dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        )
    return _size_group


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable host objects; every rank must call)."""
    if world_size() == 1:
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj, group=_cpu_group())
    return out


def check_equal_batch(n: int) -> None:
    """Fail clearly if the ranks' batch sizes differ (an all_gather would hang or misalign).

    Sizes are host ints, so they travel over a CPU (gloo) group: no device sync.
    """
    if world_size() == 1:
        return
    sizes = torch.empty(world_size(), dtype=torch.long)
    _gather_into(sizes, torch.tensor([n]), group=_cpu_group())
    if (sizes != n).any():
        raise ValueError(
            f"shuffling BN needs the same batch size on every process, got {sizes.tolist()}; "
            f"use drop_last=True in the loader and the same batch_size on every rank"
        )
