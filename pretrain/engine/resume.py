"""Resuming a run where it stopped: which checkpoints may continue this run's layout, and
each process's own augmentation / shuffle streams and skip counts."""

from pretrain.engine import checkpoint as ckpt
from pretrain.engine.config import ConfigError


def check_resumable(state, cfg, world_size, iters_per_epoch, path):
    """A checkpoint taken mid-epoch continues only with the same data layout (batch x processes,
    iterations per epoch): its position is an iteration count of that layout. At an epoch
    boundary anything may change."""
    if not state["iter"]:
        return
    saved_world = state.get("world_size", world_size)
    saved_batch = (state.get("config") or {}).get("batch_size", cfg["batch_size"])
    saved_iters = state.get("iters_per_epoch", iters_per_epoch)
    if (saved_world, saved_batch, saved_iters) != (
        world_size,
        cfg["batch_size"],
        iters_per_epoch,
    ) or state["iter"] > iters_per_epoch:
        raise ConfigError(
            f"{path} was written at iteration {state['iter']} of epoch "
            f"{state['epoch']} with batch_size "
            f"{saved_batch} x {saved_world} processes, {saved_iters} "
            "iterations per epoch; this run has "
            f"batch_size {cfg['batch_size']} x {world_size} processes, "
            f"{iters_per_epoch} iterations per epoch "
            "(batch size, process count or data changed), so its position in "
            "the epoch means nothing here.\n"
            "  Fix: resume with the same batch_size, number of processes and "
            "data, or from a checkpoint "
            "written at the end of an epoch (checkpoint.every_iters aside, "
            "one is written after every epoch)."
        )


def restore_rank_state(state, ctx, generators, loader, global_step):
    """Each rank's own augmentation/shuffle streams and skip count.

    Fresh streams if the process count changed (the trajectory cannot continue then), offset by
    the step so they do not repeat.
    """
    ranks = state.get("ranks")
    if ranks is not None and len(ranks) == ctx.world_size:
        mine = ranks[ctx.rank]
        for name, g in generators.items():
            if name in mine["generators"]:
                g.set_state(mine["generators"][name])
        loader.restore_skipped(mine["skipped_images"])
        return
    if ranks is None and state.get("world_size", 1) == ctx.world_size == 1 and "rng" in state:
        ckpt.set_rng_state(
            state["rng"], generators
        )  # older one-process checkpoints: streams in "rng"
    else:
        for g in generators.values():
            g.manual_seed(g.initial_seed() + 1_000_003 * global_step)
        if ctx.is_main:
            why = (
                f"the checkpoint was written by {state.get('world_size')} "
                f"processes, this run has {ctx.world_size}"
                if ranks is not None
                else "the checkpoint does not hold each process's streams (older format)"
            )
            print(
                f"note: {why}: augmentation and shuffling streams restart (the run "
                "goes on, on another path)"
            )
    loader.restore_skipped(state.get("skipped_images", 0) if ctx.is_main else 0)
