"""What a result was made with: the effective protocol, and where every input came from.

The paper's protocols assume 8 GPUs x 2 images (16 per batch). On fewer processes a run keeps the
config's total batch (more images per process: the paper's protocol), unless the config sets
``SOLVER.REFERENCE_WORLD_SIZE``: then Detectron2's own rule (``DefaultTrainer.auto_scale_workers``)
scales batch and LR linearly and iterations inversely. ``apply_protocol`` applies it once, before
the trainer, labels it in ``MOCO.PROTOCOL`` and returns the line train_net prints, so nothing
changes silently; ``provenance(cfg)`` is what ``eval_results.json`` records beside the numbers.
"""

import functools
import hashlib
import json
import os
import subprocess

import yaml
from detectron2.engine import DefaultTrainer
from detectron2.utils import comm

from convert.writer import sha256_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Locations and per-trial values: two trials of one setting differ in them, so they are not hashed
# (the weights are compared by their sha256 instead of their path).
NOT_HASHED = ("OUTPUT_DIR", "SEED", "MODEL.WEIGHTS", "MOCO.CONFIG_FILE")
SAME_BATCH = "same total batch as the config"
LINEAR = "linear-scaled"


class ProtocolError(ValueError):
    """The batch cannot be split over the processes; the message says how to fix it."""


def _label(cfg, world_size):
    ref = cfg.SOLVER.REFERENCE_WORLD_SIZE
    return LINEAR if ref and ref != world_size else SAME_BATCH


def apply_protocol(cfg, world_size):
    """``(cfg, line)``: ``cfg`` as it will train on ``world_size`` processes (frozen), and the line
    that says which protocol that is, with the effective total batch, LR, iterations and steps."""
    ref = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if ref and cfg.SOLVER.IMS_PER_BATCH % ref:
        raise ProtocolError(
            f"SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not a multiple of "
            f"SOLVER.REFERENCE_WORLD_SIZE {ref}. Fix: SOLVER.REFERENCE_WORLD_SIZE 0 (keep the "
            f"total batch) or a divisor of the batch."
        )
    label = _label(cfg, world_size)
    scaled = DefaultTrainer.auto_scale_workers(cfg, world_size)  # Detectron2's rule, not ours
    batch = scaled.SOLVER.IMS_PER_BATCH
    if batch % world_size:
        raise ProtocolError(
            f"SOLVER.IMS_PER_BATCH {batch} cannot be split evenly over {world_size} processes. "
            f"Fix: a process count that divides {batch} (--num-gpus), or SOLVER.IMS_PER_BATCH a "
            f"multiple of {world_size} (and BASE_LR scaled with it)."
        )
    scaled.defrost()
    scaled.MOCO.PROTOCOL = label
    scaled.freeze()
    if label == LINEAR:
        how = (
            f"LINEAR-SCALED by Detectron2's SOLVER.REFERENCE_WORLD_SIZE rule from {ref} to "
            f"{world_size} processes (x{world_size / ref:g}; not the paper's protocol, whose "
            f"total batch is the config's {cfg.SOLVER.IMS_PER_BATCH})"
        )
    else:
        how = (
            "the config's total batch on any number of processes (for our task configs the "
            "paper's protocol; SOLVER.REFERENCE_WORLD_SIZE is 0 or this world size)"
        )
    s = scaled.SOLVER
    line = (
        f"effective protocol: {how}: {world_size} process(es) x {batch // world_size} images = "
        f"total batch {batch}, BASE_LR {s.BASE_LR:g}, MAX_ITER {s.MAX_ITER}, "
        f"STEPS {tuple(s.STEPS)}, WARMUP_ITERS {s.WARMUP_ITERS}"
    )
    return scaled, line


def protocol_record(cfg, world_size):
    """The effective protocol as data (``cfg``: the config the trainer runs)."""
    s = cfg.SOLVER
    return {
        "label": cfg.MOCO.get("PROTOCOL") or _label(cfg, world_size),
        "world_size": world_size,
        "reference_world_size": s.REFERENCE_WORLD_SIZE,
        "ims_per_batch": s.IMS_PER_BATCH,
        "ims_per_process": s.IMS_PER_BATCH // max(world_size, 1),
        "base_lr": s.BASE_LR,
        "max_iter": s.MAX_ITER,
        "steps": list(s.STEPS),
        "warmup_iters": s.WARMUP_ITERS,
    }


def config_sha256(cfg):
    """sha256 of the merged config without ``NOT_HASHED`` (same settings -> same hash)."""
    data = yaml.safe_load(cfg.dump())
    for dotted in NOT_HASHED:
        parts = dotted.split(".")
        parent = data
        for part in parts[:-1]:
            parent = parent.get(part, {})
        parent.pop(parts[-1], None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


@functools.lru_cache(maxsize=8)
def _file_sha256(path, size, mtime):
    return sha256_of(path)


def weights_record(weights):
    """``{"path", "sha256", "source"}``; source: what our converter made the file from."""
    if not weights:
        return {"path": "", "sha256": None, "source": None, "note": "random init"}
    local = weights
    if "://" in weights:
        from detectron2.utils.file_io import PathManager

        try:
            local = PathManager.get_local_path(weights)  # the cached copy the checkpointer read
        except Exception:  # noqa: BLE001 - no network now: the hash is unknown, not an error
            return {"path": weights, "sha256": None, "source": None}
    local = os.path.abspath(os.path.expanduser(local))
    if not os.path.isfile(local):
        return {"path": weights, "sha256": None, "source": None}
    st = os.stat(local)
    source = None
    if local.endswith(".pkl"):
        from pretrain.weights.safe_pickle import safe_pickle_load

        data = safe_pickle_load(local)
        source = data.get("source") if isinstance(data, dict) else None
    return {
        "path": weights if "://" in weights else local,
        "sha256": _file_sha256(local, st.st_size, st.st_mtime_ns),
        "source": source,
    }


@functools.lru_cache(maxsize=1)
def code_version():
    """``{"commit", "dirty"}`` of this checkout, or ``"unknown"`` (an installed copy, no git)."""
    try:
        commit = subprocess.run(
            ["git", "-C", REPO, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", REPO, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return {"commit": commit, "dirty": bool(status.strip())}


@functools.lru_cache(maxsize=1)
def detectron2_variant():
    from detection.cli.env_info import detectron2_info

    info = detectron2_info()
    return f"{info['variant']} {info.get('version') or ''}".strip()


def provenance(cfg, world_size=None):
    """Everything ``eval_results.json`` records about how its numbers were made."""
    world_size = comm.get_world_size() if world_size is None else world_size
    return {
        "config_file": cfg.MOCO.get("CONFIG_FILE") or None,
        "config_sha256": config_sha256(cfg),
        "weights": weights_record(cfg.MODEL.WEIGHTS),
        "code": code_version(),
        "detectron2": detectron2_variant(),
        "world_size": world_size,
        "protocol": protocol_record(cfg, world_size),
        "seed": cfg.SEED,
    }
