"""What detection.densepose adds around Detectron2's DensePose project, tested without it.

DensePose is on no registry, so these tests do not run it: they test our parts against stand-ins
with DensePose's interfaces (its ``register_dataset(info, datasets_root)``, its
``PathManager.get_local_path(url, timeout_sec=120)`` call), and the real iopath and Detectron2
around them (README, "Detectron2", says what a real run with DensePose installed does).
"""

import os
import shlex
from collections import namedtuple
from urllib.error import URLError

import pytest
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, MetadataCatalog
from iopath.common.file_io import HTTPURLHandler
from iopath.common.file_io import PathManager as PathManagerBase

from detection import checks, densepose, evaluation
from tests.detection import layouts

# DensePose's CocoDatasetInfo (densepose/data/datasets/coco.py), with its three COCO entries.
Info = namedtuple("Info", "name images_root annotations_fpath")
INFOS = [
    Info(f"densepose_coco_2014_{split}", f"coco/{images}", f"coco/annotations/densepose_{ann}.json")
    for split, images, ann in (
        ("train", "train2014", "train2014"),
        ("minival", "val2014", "minival2014"),
        ("valminusminival", "val2014", "valminusminival2014"),
    )
]


class StandInRegistrar:
    """DensePose's coco.register_dataset(info, datasets_root): paths under the root in metadata."""

    def __init__(self):
        self.calls = []

    def __call__(self, info, root):
        self.calls.append((info.name, root))
        DatasetCatalog.register(info.name, lambda: [])
        MetadataCatalog.get(info.name).set(
            json_file=os.path.join(root, info.annotations_fpath),
            image_root=os.path.join(root, info.images_root),
        )


@pytest.fixture
def registrar():
    reg = StandInRegistrar()
    yield reg
    for info in INFOS:
        if info.name in DatasetCatalog.list():
            DatasetCatalog.remove(info.name)
        if info.name in MetadataCatalog.list():
            MetadataCatalog.remove(info.name)


def test_datasets_are_registered_under_detectron2_datasets(registrar, tmp_path, monkeypatch):
    # As DensePose's import does: under ./datasets of the working directory.
    for info in INFOS:
        registrar(info, "datasets")
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    monkeypatch.chdir(tmp_path)
    names = densepose.register_densepose_datasets(registrars=[(registrar, INFOS)])
    assert names == [i.name for i in INFOS]
    meta = MetadataCatalog.get("densepose_coco_2014_train")
    assert meta.json_file == str(tmp_path / "d2" / "coco/annotations/densepose_train2014.json")
    assert meta.densepose_data_root == str(tmp_path / "d2")
    # Idempotent: nothing registered again under the same root; another root re-registers.
    calls = len(registrar.calls)
    densepose.register_densepose_datasets(registrars=[(registrar, INFOS)])
    assert len(registrar.calls) == calls
    densepose.register_densepose_datasets(str(tmp_path / "other"), registrars=[(registrar, INFOS)])
    minival = MetadataCatalog.get("densepose_coco_2014_minival")
    assert minival.image_root == str(tmp_path / "other" / "coco" / "val2014")


def test_missing_densepose_data_names_the_variable_that_chose_the_root(
    registrar, tmp_path, monkeypatch
):
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    densepose.register_densepose_datasets(registrars=[(registrar, INFOS)])
    with pytest.raises(checks.DatasetNotFoundError) as e:
        checks.check_dataset("densepose_coco_2014_minival")
    msg = str(e.value)
    assert str(tmp_path / "d2" / "coco/annotations/densepose_minival2014.json") in msg
    assert f"DETECTRON2_DATASETS={tmp_path / 'd2'}" in msg
    assert "when a DensePose config is loaded" in msg and "densepose_minival2014.json" in msg
    # The same names on a tiny DensePose-COCO layout written there: found.
    layouts.write_densepose_coco(tmp_path / "d2")
    for info in INFOS:
        checks.check_dataset(info.name)


def test_densepose_own_registration_is_reported_as_ignoring_the_variable(
    registrar, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DETECTRON2_DATASETS", str(tmp_path / "d2"))
    registrar(INFOS[1], "datasets")  # what `import densepose` alone leaves behind
    with pytest.raises(checks.DatasetNotFoundError, match="ignores DETECTRON2_DATASETS") as e:
        checks.check_dataset("densepose_coco_2014_minival")
    assert "register_densepose_datasets" in str(e.value)


# ---------------------------------------------------------------------------------------------
# Files DensePose downloads at run time

DP_CFG = CfgNode({"MODEL": CfgNode({"DENSEPOSE_ON": True})})


def test_uncached_runtime_files_fail_before_training_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    tried = []

    def offline(url):
        tried.append(url)
        raise URLError("[Errno -2] Name or service not known")

    with pytest.raises(checks.CheckError) as e:
        checks.check_densepose_files(DP_CFG, fetch=offline)
    msg = str(e.value)
    for name in (
        "UV_symmetry_transforms.mat",
        "SMPL_subdiv.mat",
        "SMPL_SUBDIV_TRANSFORM.mat",
        "Pdist_matrix.pkl",
    ):
        assert densepose.DENSEPOSE_URL_PREFIX + name in msg
    assert str(tmp_path / "cache" / "densepose" / "data") in msg  # where iopath caches them
    assert "URLError" in msg and "FVCORE_CACHE=dp_cache python -c" in msg
    assert len(tried) == 4
    # --eval-only does not train: the UV symmetry file is not needed.
    with pytest.raises(checks.CheckError) as e:
        checks.check_densepose_files(DP_CFG, eval_only=True, fetch=offline)
    assert "UV_symmetry_transforms.mat" not in str(e.value) and "3 file(s)" in str(e.value)


def test_prefetch_command_is_one_shell_line_that_fills_the_cache(tmp_path):
    urls = list(densepose.runtime_files())
    words = shlex.split(densepose.prefetch_command(urls))
    assert words[:3] == ["FVCORE_CACHE=dp_cache", "python", "-c"]
    compile(words[3], "<prefetch>", "exec")  # valid Python
    assert all(u in words[3] for u in urls)


def test_cached_runtime_files_are_used_without_fetching(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "densepose" / "data"
    folder.mkdir(parents=True)
    for name in densepose.RUNTIME_FILES:
        (folder / name).write_bytes(b"x")

    def no_network(url):
        raise AssertionError(f"fetched {url} although it is cached")

    paths = checks.check_densepose_files(DP_CFG, fetch=no_network)
    assert sorted(paths.values()) == sorted(str(folder / n) for n in densepose.RUNTIME_FILES)
    assert checks.check_densepose_files(CfgNode({"MODEL": CfgNode()}), fetch=no_network) == {}


# ---------------------------------------------------------------------------------------------
# DensePose's evaluator: PathManager.get_local_path(url, timeout_sec=120)

PDIST_URL = "https://dl.fbaipublicfiles.com/densepose/data/Pdist_matrix.pkl"


def _cached_pdist(tmp_path, monkeypatch):
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "densepose" / "data" / "Pdist_matrix.pkl"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"cached")
    return str(path)


def test_timeout_sec_is_accepted_once_our_handler_is_registered(tmp_path, monkeypatch):
    cached = _cached_pdist(tmp_path, monkeypatch)
    manager = PathManagerBase()
    manager.register_handler(HTTPURLHandler())  # as detectron2.utils.file_io does
    with pytest.raises(ValueError, match="Unused arguments"):  # the installed iopath's answer
        manager.get_local_path(PDIST_URL, timeout_sec=120)
    densepose.accept_timeout_sec(manager)
    assert manager.get_local_path(PDIST_URL, timeout_sec=120) == cached  # from the cache
    assert manager.get_local_path(PDIST_URL) == cached


def test_evaluator_factory_makes_detectron2s_path_manager_accept_timeout_sec(tmp_path, monkeypatch):
    from detectron2.utils.file_io import PathManager

    cached = _cached_pdist(tmp_path, monkeypatch)
    # The handler table is restored after the test.
    monkeypatch.setattr(PathManager, "_path_handlers", dict(PathManager._path_handlers))
    PathManager.register_handler(HTTPURLHandler(), allow_override=True)  # Detectron2's own handler

    class StandInDensePoseTrainer:  # what DensePose's evaluator does when it is built
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder):
            return PathManager.get_local_path(PDIST_URL, timeout_sec=120)

    monkeypatch.setattr(evaluation, "densepose_trainer_class", lambda: StandInDensePoseTrainer)
    cfg = CfgNode({"MODEL": CfgNode({"DENSEPOSE_ON": True}), "OUTPUT_DIR": str(tmp_path)})
    assert evaluation.build_evaluator(cfg, "densepose_coco_2014_minival") == cached


# ---------------------------------------------------------------------------------------------
# Installing


def test_install_command_installs_beside_our_detectron2():
    cmd = densepose.INSTALL_COMMAND
    pip_lines = [part.strip() for part in cmd.split("&&") if "pip install" in part]
    project = [p for p in pip_lines if "projects/DensePose" in p]
    assert project and all("--no-deps" in p for p in project)  # no git build of Detectron2
    assert "git+" not in cmd and "#subdirectory" not in cmd
    assert any("av" in shlex.split(p) or "av>=8.0.3" in shlex.split(p) for p in pip_lines)
    # setup.py reads ../../detectron2/__init__.py: the project is installed from a full checkout.
    clone = shlex.split(cmd.split("&&")[0])
    assert clone[:2] == ["git", "clone"] and project[0].split()[-1].startswith(clone[-1])
