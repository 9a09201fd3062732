"""Start N local processes the way torchrun does: this process holds the rendezvous store.

Picking a "free" port (bind, close, hand the number on) races with every other test run on the
machine: the port can be taken before rank 0 binds it, and rank 1 may then join someone else's
store. Here the store is bound once, on a port the OS chooses, and stays bound while the ranks
run; ``TORCHELASTIC_USE_AGENT_STORE`` makes every rank a client of it (torchrun's agent does the
same), so the code under test still joins through ``env://`` with MASTER_ADDR/MASTER_PORT.
"""

import os

import torch.distributed as dist
import torch.multiprocessing as mp


def _entry(rank, port, fn, args):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), TORCHELASTIC_USE_AGENT_STORE="True"
    )
    fn(rank, *args)


def spawn(fn, args=(), nprocs=2):
    """``mp.spawn(fn, args, nprocs)`` with MASTER_ADDR/MASTER_PORT naming a store held here."""
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    try:
        mp.spawn(_entry, args=(store.port, fn, tuple(args)), nprocs=nprocs, join=True)
    finally:
        del store
