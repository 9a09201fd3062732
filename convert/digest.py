"""A converted file's own checksum: the SHA-256 of its tensors, stored in it as ``tensor_sha256``
when it is written (``convert.writer``) and checked again when training loads it
(``detection.checks``), so bit rot or a broken copy after conversion is refused."""

import hashlib

import numpy as np

DIGEST_KEY = "tensor_sha256"


def tensor_digest(arrays):
    """SHA-256 over the names, dtypes, shapes and bytes of ``{name: numpy array}``, sorted."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def digest_problem(data):
    """Why a converted file's tensors differ from those it was written with; None if they don't.

    Files without a ``tensor_sha256`` (other writers, older conversions) have nothing to check.
    """
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        return None
    if DIGEST_KEY not in data:
        return None
    if tensor_digest(data["model"]) == data[DIGEST_KEY]:
        return None
    return (
        "is damaged: its tensors no longer match the tensor_sha256 recorded when it was "
        "converted (bit rot or a broken copy).\n  Fix: copy it again, or convert the "
        "checkpoint again (python tools/convert.py)."
    )
