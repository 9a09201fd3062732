"""DensePose is a Detectron2 *project*, not part of the detectron2 package: import it on demand.

Only DensePose configs need it; everything else in ``detection`` works without it.
"""
import importlib

INSTALL_COMMAND = (
    "pip install 'git+https://github.com/facebookresearch/detectron2@main#subdirectory=projects/DensePose'"
)


class DensePoseMissingError(ImportError):
    pass


def require_densepose():
    """The ``densepose`` package (its import registers its heads and datasets), or a clear error."""
    try:
        return importlib.import_module("densepose")
    except ImportError as e:
        raise DensePoseMissingError(
            "DensePose configs need the DensePose project of Detectron2, which is not installed "
            f"({e}).\n  Fix: {INSTALL_COMMAND}\n"
            "  (the other configs do not need it)."
        ) from e


def densepose_on(cfg):
    return bool(cfg.MODEL.get("DENSEPOSE_ON", False))


def densepose_trainer_class():
    """DensePose's own trainer: its data loaders and evaluators know DensePose annotations."""
    require_densepose()
    from densepose.engine import Trainer

    return Trainer
