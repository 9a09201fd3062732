"""Files that must survive a crash, and checkpoints that must not run code.

Shared by pretraining checkpoints, the converter and every tool that writes results.
"""

import argparse
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
        # mkstemp makes the file 0600; give it the mode open() would (umask applies), so that
        # checkpoints and results on a shared cluster stay readable by the group as usual.
        os.chmod(tmp, 0o666 & ~_umask())
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


def _umask():
    mask = os.umask(0)  # the only portable way to read it is to set it
    os.umask(mask)
    return mask


def atomic_torch_save(obj, path):
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def atomic_pickle_dump(obj, path):
    atomic_write_bytes(path, pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class UnsafeCheckpointError(RuntimeError):
    """The file needs arbitrary code to unpickle; we refuse to run it."""


class CorruptCheckpointError(ValueError):
    """The file is empty, truncated or not a checkpoint at all."""


def safe_torch_load(path, map_location="cpu"):
    """``torch.load(..., weights_only=True)`` with errors that say what to do.

    Checkpoints from outside are untrusted: only tensors, numbers, strings and
    containers are accepted.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path!r}")
    try:
        # argparse.Namespace (DINO's, timm's, PixPro's saved args) holds plain attributes: its
        # values still go through weights_only's checks, so allowing it lets no code run.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "GLOBAL" not in str(e):  # e.g. "Unsupported operand": bytes that are no pickle at all
            raise _corrupt(path, e) from e
        raise UnsafeCheckpointError(
            f"{path!r} is not a plain-weights checkpoint: loading it would execute code "
            f"stored in the file, which we never do for untrusted files.\n"
            f"  torch said: {_reason(e)}\n"
            f"  Fix: re-save it from a trusted environment with only tensors, e.g. "
            f"torch.save({{'state_dict': model.state_dict()}}, path)."
        ) from e
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        IndexError,
    ) as e:  # what torch raises on bad bytes
        raise _corrupt(path, e) from e


def _reason(e):
    """The informative line of torch's message (its first lines are a generic paragraph)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line
    return f"{type(e).__name__}: {lines[0] if lines else ''}"


def _corrupt(path, e):
    return CorruptCheckpointError(
        f"{path!r} is not a readable checkpoint ({os.path.getsize(path)} bytes): it is empty, cut "
        f"short (an interrupted download or copy?) or not a torch.save file.\n"
        f"  torch said: {_reason(e)}\n"
        f"  Fix: download or copy it again."
    )


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
