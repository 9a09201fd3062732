"""DensePose is a Detectron2 *project*, not part of the detectron2 package: import it on demand.

Only DensePose configs need it; everything else in ``detection`` works without it. What a user
hits with the project as it is, and what this module does about it:

* Installing: no registry carries it, its setup.py reads ``../../detectron2/__init__.py`` (so it
  installs only from a Detectron2 checkout), imports torch (so pip's isolated build fails) and
  depends on ``detectron2@git+...`` (a source build of Detectron2 over ours) and ``av``:
  ``INSTALL_COMMAND`` installs it beside the Detectron2 we have.
* Datasets: its import registers ``densepose_*`` under ``./datasets`` of the working directory,
  whatever ``$DETECTRON2_DATASETS`` says: ``require_densepose`` re-registers them under the root
  every other dataset uses (``register_densepose_datasets``).
* Files fetched at run time from dl.fbaipublicfiles.com (``RUNTIME_FILES``): training reads the
  UV symmetry transforms, evaluation three SMPL/geodesic-distance files, into iopath's cache;
  ``ensure_runtime_files`` (a pre-flight check) fetches them before the first iteration and says
  how to pre-fetch them where there is no network.
* Its evaluator calls ``PathManager.get_local_path(url, timeout_sec=120)``, which iopath's HTTP
  handler rejects (``ValueError: Unused arguments``) after all of training:
  ``accept_timeout_sec`` registers a handler that takes the argument.
"""

import importlib
import os

DETECTRON2_REPO = "https://github.com/facebookresearch/detectron2"
# One shell line; --no-deps keeps our Detectron2 (the project's metadata asks for a git build of
# it), --no-build-isolation lets its setup.py import the installed torch, and the checkout gives
# setup.py the ../../detectron2/__init__.py it reads its version from.
INSTALL_COMMAND = (
    f"git clone --depth 1 {DETECTRON2_REPO} /tmp/detectron2-src && pip install 'av>=8.0.3' && "
    "pip install --no-deps --no-build-isolation /tmp/detectron2-src/projects/DensePose"
)
DATASETS_ENV = "DETECTRON2_DATASETS"
DENSEPOSE_URL_PREFIX = "https://dl.fbaipublicfiles.com/densepose/data/"
# file -> when DensePose reads it (data/dataset_mapper.py, evaluation/densepose_coco_evaluation.py)
RUNTIME_FILES = {
    "UV_symmetry_transforms.mat": "training (horizontal flip of the UV annotations)",
    "SMPL_subdiv.mat": "evaluation (GPS/GPSm)",
    "SMPL_SUBDIV_TRANSFORM.mat": "evaluation (GPS/GPSm)",
    "Pdist_matrix.pkl": "evaluation (geodesic distances)",
}
TRAIN_FILES = ("UV_symmetry_transforms.mat",)


class DensePoseMissingError(ImportError):
    pass


class DensePoseFilesError(RuntimeError):
    """Files DensePose downloads at run time are neither cached nor downloadable."""


def require_densepose():
    """The ``densepose`` package (its import registers its heads), or a clear error.

    Its datasets are re-registered under ``$DETECTRON2_DATASETS`` (see the module docstring).
    """
    try:
        module = importlib.import_module("densepose")
    except ImportError as e:
        raise DensePoseMissingError(
            "DensePose configs need the DensePose project of Detectron2, which is not installed "
            f"({e}).\n  Fix: {INSTALL_COMMAND}\n"
            "  (the other configs do not need it)."
        ) from e
    register_densepose_datasets()
    return module


def densepose_on(cfg):
    return bool(cfg.MODEL.get("DENSEPOSE_ON", False))


def densepose_trainer_class():
    """DensePose's own trainer: its data loaders and evaluators know DensePose annotations."""
    require_densepose()
    from densepose.engine import Trainer

    return Trainer


# ---------------------------------------------------------------------------------------------
# Datasets


def datasets_root(root=None):
    """The folder Detectron2's builtin datasets are registered under: $DETECTRON2_DATASETS, else
    ./datasets (resolved now, so a later change of the working directory does not move it)."""
    return os.path.abspath(os.path.expanduser(root or os.getenv(DATASETS_ENV) or "datasets"))


def _densepose_registrars():
    """[(register(info, root), [CocoDatasetInfo])] of DensePose's image datasets (COCO, LVIS)."""
    from densepose.data.datasets import coco, lvis

    return [
        (coco.register_dataset, list(coco.DATASETS) + list(coco.BASE_DATASETS)),
        (lvis.register_dataset, list(lvis.DATASETS)),
    ]


def register_densepose_datasets(root=None, registrars=None):
    """Register DensePose's datasets under ``root`` (default: ``datasets_root()``) with its own
    registration functions, which take a root. Idempotent; returns the names.

    ``registrars``: [(register(info, root), infos)], by default DensePose's (COCO and LVIS).
    """
    from detectron2.data import DatasetCatalog, MetadataCatalog

    root = datasets_root(root)
    names = []
    for register, infos in registrars if registrars is not None else _densepose_registrars():
        for info in infos:
            names.append(info.name)
            if MetadataCatalog.get(info.name).get("densepose_data_root") == root:
                continue
            if info.name in DatasetCatalog.list():
                DatasetCatalog.remove(info.name)
            MetadataCatalog.remove(info.name)
            register(info, root)
            # detection.checks names the variable that chose this root.
            MetadataCatalog.get(info.name).set(densepose_data_root=root)
    return names


# ---------------------------------------------------------------------------------------------
# Files DensePose downloads at run time


def runtime_files(eval_only=False):
    """{URL: what needs it} for a run (training also evaluates at the end)."""
    names = [n for n in RUNTIME_FILES if not (eval_only and n in TRAIN_FILES)]
    return {DENSEPOSE_URL_PREFIX + n: RUNTIME_FILES[n] for n in names}


def cached_path(url):
    """Where iopath (Detectron2's PathManager) keeps ``url``: under $FVCORE_CACHE, else
    ~/.torch/iopath_cache."""
    from urllib.parse import urlparse

    from iopath.common.file_io import get_cache_dir

    parsed = urlparse(url)
    return os.path.join(
        get_cache_dir(), os.path.dirname(parsed.path.lstrip("/")), os.path.basename(parsed.path)
    )


def prefetch_command(urls, cache="dp_cache"):
    """A shell line that downloads ``urls`` into ``cache``/densepose/data/ (iopath's layout)."""
    quoted = ", ".join(repr(u) for u in urls)
    return (
        f'FVCORE_CACHE={cache} python -c "from detectron2.utils.file_io import PathManager; '
        f'[PathManager.get_local_path(u) for u in ({quoted},)]"'
    )


def ensure_runtime_files(eval_only=False, fetch=None):
    """Fetch (or find cached) the files DensePose would download mid-run; returns their paths.

    Raises ``DensePoseFilesError`` naming the files, the cache folder and how to pre-fetch them
    when they are not cached and cannot be downloaded (an offline cluster), before any iteration.
    ``fetch``: url -> local path (default: Detectron2's PathManager.get_local_path).
    """
    if fetch is None:
        from detectron2.utils.file_io import PathManager

        fetch = PathManager.get_local_path
    paths, failed = {}, []
    for url, why in runtime_files(eval_only).items():
        cached = cached_path(url)
        if os.path.isfile(cached):
            paths[url] = cached
            continue
        try:
            paths[url] = fetch(url)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, socket errors, ...
            failed.append((url, why, f"{type(e).__name__}: {e}"))
    if failed:
        cache = os.path.dirname(cached_path(failed[0][0]))
        lines = "\n".join(f"    {url} (for {why}): {err}" for url, why, err in failed)
        raise DensePoseFilesError(
            f"DensePose downloads {len(failed)} file(s) at run time, which are not cached in "
            f"{cache} and could not be downloaded now:\n{lines}\n"
            f"  Fix: on a machine with internet run\n"
            f"    {prefetch_command([u for u, *_ in failed])}\n"
            f"  then copy dp_cache/densepose/data/* into {cache} here (or set FVCORE_CACHE to a "
            "copy of dp_cache); or download the URLs into that folder by hand."
        )
    return paths


# ---------------------------------------------------------------------------------------------
# DensePose's evaluator vs iopath


def timeout_tolerant_http_handler():
    """iopath's HTTPURLHandler that also takes DensePose's ``timeout_sec`` argument.

    iopath's downloader has no timeout parameter, so the value is not used; the files are
    fetched by the pre-flight check (``ensure_runtime_files``) before training anyway.
    """
    from iopath.common.file_io import HTTPURLHandler

    class TimeoutTolerantHTTPURLHandler(HTTPURLHandler):
        def _get_local_path(self, path, force=False, cache_dir=None, timeout_sec=None, **kwargs):
            return super()._get_local_path(path, force=force, cache_dir=cache_dir, **kwargs)

    return TimeoutTolerantHTTPURLHandler()


def accept_timeout_sec(path_manager=None):
    """Make ``path_manager`` (default: Detectron2's) accept ``get_local_path(url, timeout_sec=)``.

    Registers the handler for iopath's HTTP prefixes through iopath's own registry (it replaces
    the plain HTTPURLHandler Detectron2 registered; downloaded files stay in the same cache).
    """
    if path_manager is None:
        from detectron2.utils.file_io import PathManager as path_manager
    handler = timeout_tolerant_http_handler()
    path_manager.register_handler(handler, allow_override=True)
    return handler
