"""Checkpoints that survive crashes and resume the same trajectory.

Layout (compatible with the official MoCo ``checkpoint_XXXX.pth.tar``)::

    {"epoch": int,            # epoch to resume in (== completed epochs when iter == 0)
     "iter": int,             # iterations already done inside that epoch
     "global_step": int,
     "arch": str,
     "state_dict": {"module.encoder_q.*", "module.encoder_k.*", "module.queue", "module.queue_ptr"},
     "optimizer": ..., "scaler": ..., "rng": {...tensors...}, "config": {...plain dict...},
     "format": "moco-pretrain/1"}

Files: ``OUT/checkpoint_<global step, 7 digits>.pth``, the newest ``keep_last``
kept, plus ``OUT/last`` naming the newest. Written atomically by rank 0 only;
loaded with ``weights_only=True``.
"""

import os
import random
import re
import shutil
import warnings

import numpy as np
import torch

from pretrain.io import atomic_torch_save, atomic_write_bytes, safe_torch_load

FORMAT = "moco-pretrain/1"
PREFIX = "module."
_NAME = re.compile(r"^checkpoint_(\d{7,})\.pth$")
# What pretrain.io.atomic_write_bytes leaves behind when killed mid-write (SIGKILL, power loss).
_PARTIAL = re.compile(r"^\.(checkpoint_\d{7,}\.pth|last)\..+\.tmp$")
REQUIRED_KEYS = ("epoch", "iter", "global_step", "state_dict", "optimizer")


def checkpoint_path(out_dir, global_step: int) -> str:
    return os.path.join(out_dir, f"checkpoint_{global_step:07d}.pth")


def list_checkpoints(out_dir):
    """[(global_step, path)] of ``checkpoint_*.pth`` in ``out_dir``, newest first."""
    if not os.path.isdir(out_dir):
        return []
    found = []
    for name in os.listdir(out_dir):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(out_dir, name)))
    return sorted(found, reverse=True)


# ---------------------------------------------------------------- model state
def model_state_dict(model) -> dict:
    """The model's state with the ``module.`` prefix, on one process too (official layout)."""
    return {PREFIX + k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def load_model_state(model, state_dict: dict) -> None:
    stripped = {k[len(PREFIX) :] if k.startswith(PREFIX) else k: v for k, v in state_dict.items()}
    own = model.state_dict()
    resized = [
        f"{k} {tuple(v.shape)} in the checkpoint, {tuple(own[k].shape)} in the model"
        for k, v in stripped.items()
        if k in own and v.shape != own[k].shape
    ]
    if resized:
        raise ValueError(
            "checkpoint does not match the model (different K / dim / arch?):\n  "
            + "\n  ".join(resized[:8])
            + (" ..." if len(resized) > 8 else "")
            + "\n  Fix: resume with the config the run was started with (stored "
            "under 'config' in the checkpoint)."
        )
    missing, unexpected = model.load_state_dict(stripped, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the model (different arch / dim / K / mlp?):\n"
            f"  missing from checkpoint: {missing[:8]}{' ...' if len(missing) > 8 else ''}\n"
            f"  not in the model: {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}\n"
            "  Fix: resume with the config the run was started with (stored "
            "under 'config' in the checkpoint)."
        )


# ---------------------------------------------------------------- RNG states as tensors
# (weights_only-loadable)
def get_rng_state(generators=None) -> dict:
    """Global torch / CUDA / Python / NumPy states, plus named extra ``torch.Generator`` s."""
    version, mt, gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": {
            "version": version,
            "state": torch.tensor(mt, dtype=torch.int64),
            "gauss": gauss,
        },
        "numpy": {
            "kind": np_kind,
            "keys": torch.from_numpy(np_keys.astype(np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()  # current device (one device per process)
    for name, g in (generators or {}).items():
        state["gen_" + name] = g.get_state()
    return state


def set_rng_state(state: dict, generators=None) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
    for name, g in (generators or {}).items():
        if "gen_" + name in state:
            g.set_state(state["gen_" + name])


# ---------------------------------------------------------------- save / find / load
def save_checkpoint(state: dict, out_dir, keep_last: int = 3) -> str:
    """Write ``state`` atomically as checkpoint_<global_step>.pth, point ``last`` at it, prune old
    ones.

    Old files are deleted only after the new one is safely on disk.
    """
    state = dict(state, format=FORMAT)
    path = checkpoint_path(out_dir, state["global_step"])
    atomic_torch_save(state, path)
    atomic_write_bytes(os.path.join(out_dir, "last"), (os.path.basename(path) + "\n").encode())
    for _, old in list_checkpoints(out_dir)[keep_last:]:
        if (
            old != path
        ):  # steps only grow within a run (see set_aside_newer), but never the file just written
            os.remove(old)
    return path


def remove_partial_writes(out_dir) -> list:
    """Delete checkpoint files a killed write left half-done (never a complete checkpoint: those
    are renamed into place whole); returns their paths. A ResNet-50 one is ~1 GB each."""
    if not os.path.isdir(out_dir):
        return []
    removed = []
    for name in os.listdir(out_dir):
        if _PARTIAL.match(name):
            os.remove(os.path.join(out_dir, name))
            removed.append(os.path.join(out_dir, name))
    return removed


def set_aside_newer(out_dir, global_step: int) -> list:
    """Move checkpoints of steps after ``global_step`` into ``OUT/superseded/``; returns their new
    paths.

    Resuming from an older checkpoint starts a new branch of the run. Its checkpoints must not be
    pruned in favour of the abandoned branch's higher step numbers, nor be passed over by a later
    ``--resume auto``; and the abandoned ones are the user's work, so they are kept, not deleted.
    """
    newer = [p for step, p in list_checkpoints(out_dir) if step > global_step]
    if not newer:
        return []
    folder = os.path.join(out_dir, "superseded")
    os.makedirs(folder, exist_ok=True)
    moved = []
    for p in newer:
        target = os.path.join(folder, os.path.basename(p))
        n = 1
        while os.path.exists(target):  # a branch abandoned before: keep both
            target = os.path.join(folder, f"{os.path.basename(p)}.{n}")
            n += 1
        shutil.move(p, target)
        moved.append(target)
    return moved


def _check_state(state, path):
    if not isinstance(state, dict) or any(k not in state for k in REQUIRED_KEYS):
        have = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(
            f"{path!r} is not a resumable MoCo pretraining checkpoint (needs "
            f"keys {list(REQUIRED_KEYS)}, has {have}). "
            f"To start from weights only, convert or load them explicitly instead of --resume."
        )


def load_checkpoint(path) -> dict:
    state = safe_torch_load(path)
    _check_state(state, path)
    return state


def latest_checkpoint(out_dir):
    """Path named by ``OUT/last`` (the newest checkpoint written), else the newest file,
    else None.
    """
    pointer = os.path.join(out_dir, "last")
    if os.path.isfile(pointer):
        with open(pointer) as f:
            path = os.path.join(out_dir, f.read().strip())
        if os.path.isfile(path):
            return path
    found = list_checkpoints(out_dir)
    return found[0][1] if found else None


def find_resumable(out_dir):
    """-> (path, state) of the newest checkpoint that loads, or (None, None).

    A truncated or corrupt file (a crash outside our atomic writes, a full disk, a
    bad copy) is skipped with a warning and the next older one is tried.
    """
    for _, path in list_checkpoints(out_dir):
        try:
            return path, load_checkpoint(path)
        except Exception as e:  # any unreadable file: fall back to an older one
            warnings.warn(
                f"skipping unreadable checkpoint {path!r}: {type(e).__name__}: "
                f"{str(e).splitlines()[0]}",
                stacklevel=2,
            )
    return None, None


def resolve_resume(resume, out_dir):
    """``None`` -> fresh start; ``"auto"`` -> newest valid in out_dir (or fresh); a path -> that
    file.
    """
    if resume is None:
        return None, None
    if resume == "auto":
        return find_resumable(out_dir)
    if not os.path.isfile(resume):
        raise FileNotFoundError(
            f"--resume {resume!r}: no such file (use --resume auto to pick the newest in --out)"
        )
    return resume, load_checkpoint(resume)
