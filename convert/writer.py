"""Write converted weights as a Detectron2 model-zoo pickle, atomically, never over a file.

Detectron2's ``DetectionCheckpointer`` reads ``.pkl`` files holding
``{"model": {name: numpy array}, "__author__": ...}`` and applies its
name-matching heuristics only when ``matching_heuristics`` is true.
"""

import hashlib
import os

import numpy as np
import torch

from convert.digest import DIGEST_KEY, tensor_digest
from pretrain.io import atomic_pickle_dump

AUTHOR = "moco-transfer"


class OutputExistsError(FileExistsError):
    """The output exists and --force was not given."""


def check_output_path(output_path, force):
    """Fail before any work if the output would be lost or unreadable by Detectron2."""
    output_path = os.fspath(output_path)
    if not output_path.endswith(".pkl"):
        raise ValueError(
            f"output {output_path!r} must end in .pkl: Detectron2's DetectionCheckpointer reads "
            f"numpy model-zoo weights only from .pkl files.\n"
            f"  Fix: name it e.g. {os.path.splitext(output_path)[0]}.pkl"
        )
    if os.path.isdir(output_path):
        raise IsADirectoryError(
            f"output {output_path!r} is a folder; give a file name ending in .pkl."
        )
    if os.path.exists(output_path) and not force:
        raise OutputExistsError(
            f"output {output_path!r} already exists; it was left untouched.\n"
            f"  Fix: choose another name, or pass --force (force=True) to replace it."
        )


def sha256_of(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def to_numpy(tensor):
    """CPU numpy copy; half/bfloat16 weights become float32 (numpy has no bfloat16)."""
    t = tensor.detach().cpu()
    if t.is_floating_point() and t.dtype != torch.float64:
        t = t.float()
    return np.ascontiguousarray(t.numpy())


def write_detectron2_weights(model, output_path, *, matching_heuristics, source, force=False):
    """Write ``{"model", "__author__", "matching_heuristics", "source", "tensor_sha256"}``.

    ``model``: {detectron2 name: tensor}; ``source``: {"file", "sha256", "format"};
    ``tensor_sha256`` lets training detect a file damaged after conversion.
    """
    check_output_path(output_path, force)
    arrays = {name: to_numpy(t) for name, t in model.items()}
    payload = {
        "model": arrays,
        "__author__": AUTHOR,
        "matching_heuristics": bool(matching_heuristics),
        "source": dict(source),
        DIGEST_KEY: tensor_digest(arrays),
    }
    atomic_pickle_dump(payload, output_path)
    return payload
