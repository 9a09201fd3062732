"""Whether Detectron2's compiled extension ``detectron2._C`` loads (the registry wheel has none)."""

import functools


@functools.lru_cache(maxsize=1)
def compiled_ops():
    """``(detectron2._C or None, why it failed or None)``; an incompatible binary raises more than
    ImportError, so every exception counts as "not available"."""
    try:
        from detectron2 import _C
    except Exception as e:  # noqa: BLE001
        return None, f"{type(e).__name__}: {e}".splitlines()[0]
    return _C, None


def has_compiled_ops():
    return compiled_ops()[0] is not None
