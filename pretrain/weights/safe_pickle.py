"""Read ``.pkl`` weight files without running code stored in them.

A pickle can name any importable callable and have it called while loading
(``__reduce__``); ``pickle.load`` of a downloaded file is arbitrary code execution.
Weight pickles (Detectron2 / Caffe2 model zoo) only need numpy arrays, numpy
scalars and plain containers, so the unpickler below resolves exactly those
globals and refuses everything else before it is called.
"""

import collections
import os
import pickle

from pretrain.io import UnsafeCheckpointError

# (module, name) pairs a numpy weight pickle needs. numpy >= 2 moved core to _core.
_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    # Protocol 5 (our writer's) rebuilds arrays from raw bytes.
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Protocol-2 pickles store bytes as latin-1 text re-encoded by _codecs.encode.
    ("_codecs", "encode"),
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
}


class _WeightsOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")  # latin1: Python-2 era Detectron pickles
        self._path = path

    def find_class(self, module, name):
        if (module, name) in _ALLOWED_GLOBALS:
            if module == "collections":
                return collections.OrderedDict
            return super().find_class(module, name)
        raise UnsafeCheckpointError(
            f"{self._path!r} refers to '{module}.{name}', which is not a numpy array or a plain "
            "container: unpickling it could execute code, so it was refused "
            "and nothing in it ran.\n"
            f"  Only numpy arrays, numpy scalars, dicts, lists, strings and numbers are accepted "
            f"in .pkl weight files.\n"
            "  Fix: if you trust the file, re-save its weights from a trusted "
            "environment as plain "
            f"numpy arrays (pickle.dump({{'model': {{name: array}}}}, f)) or as a torch state dict "
            f"(torch.save(state_dict, 'weights.pth'))."
        )

    def persistent_load(self, pid):
        raise UnsafeCheckpointError(
            f"{self._path!r} is a torch pickle with external tensor storage, not a numpy .pkl.\n"
            f"  Fix: rename it to .pth so it is read by torch.load(weights_only=True)."
        )


def safe_pickle_load(path):
    """Load a numpy weight pickle; refuse (without running it) anything that needs code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"weights file not found: {path!r}")
    with open(path, "rb") as f:
        try:
            return _WeightsOnlyUnpickler(f, path).load()
        except UnsafeCheckpointError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
            raise pickle.UnpicklingError(
                f"{path!r} is not a readable pickle ({type(e).__name__}: {e}).\n"
                f"  Fix: check the file is complete (re-download/re-copy it); torch checkpoints "
                f"should have a .pth extension."
            ) from e
