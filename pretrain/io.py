"""Files that must survive a crash, and checkpoints that must not run code.

Shared by pretraining checkpoints, the converter and every tool that writes results.
"""
import io
import json
import os
import pickle
import tempfile

import torch


def atomic_write_bytes(path, data):
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    Temporary file in the same folder, fsync, rename: a kill mid-write leaves the old file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    # fsync the folder so the rename itself is durable.
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_torch_save(obj, path):
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_pickle_dump(obj, path):
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class UnsafeCheckpointError(RuntimeError):
    """The file needs arbitrary code to unpickle; we refuse to run it."""


def safe_torch_load(path, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` with errors that say what to do.

    Checkpoints from outside are untrusted: only tensors, numbers, strings and
    containers are accepted.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeCheckpointError(
            f"{path!r} is not a plain-weights checkpoint: loading it would execute code "
            f"stored in the file, which we never do for untrusted files.\n"
            f"  torch said: {str(e).splitlines()[0]}\n"
            f"  Fix: re-save it from a trusted environment with only tensors, e.g. "
            f"torch.save({{'state_dict': model.state_dict()}}, path)."
        ) from e


def read_json_lines(path):
    """Records of a JSON-lines file (metrics.jsonl, Detectron2's metrics.json), in order.

    A line cut short by a killed run is skipped, not an error: the file is appended to while
    training, so its last line may be half-written.
    """
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
