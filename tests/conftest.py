"""Shared fixtures. Keep minimal: data is generated here, never committed."""

import os

# Tests never open windows; set before anything imports matplotlib.
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

# Tiny demo data: enough for every split and class to be present, fast to generate (< 1 s).
# One unlabeled render per train scan (the demo has 4): 160 unlabeled images, as tests count on.
TINY_DEMO_DATA = dict(seed=0, limit=200, n_det_trainval=24, n_det_test=8, unlabeled_renders=1)


@pytest.fixture(scope="session")
def tiny_demo_data(tmp_path_factory):
    """Paths (see ``detection.demo.data.demo_data_paths``) of a tiny demo data set, generated once
    per session.

    200 digit scans (160 train / 40 val, 64x64 RGB), 24 trainval and 8 test 160x160 scenes.
    Treat it as read-only: it is shared by every test in the session.
    """
    from detection.demo.data import make_demo_data

    return make_demo_data(
        tmp_path_factory.mktemp("tiny_demo_data"), verbose=False, **TINY_DEMO_DATA
    )


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP threads only add synchronisation (on a busy 2-core machine, whole
    seconds of spin-waiting per step); one intra-op thread runs these models several times faster.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def repo_stays_clean():
    """For tests that run tools with ``cwd`` in the repository: the checkout's tracked and
    untracked (not ignored) files must be the same after the test as before it."""
    import subprocess

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def status():
        return subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=all"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    before = status()
    yield
    assert status() == before, "a tool run from the repository left files in it (or changed some)"


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run where torch sees a CUDA device, or when ``-m`` names them (and then fail
    without one); elsewhere they are deselected, and the summary says so."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or "gpu" in (config.option.markexpr or ""):
        return
    import torch

    if torch.cuda.is_available():
        return
    config.hook.pytest_deselected(items=gpu)
    items[:] = [item for item in items if not item.get_closest_marker("gpu")]
    config._gpu_deselected = len(gpu)


def pytest_terminal_summary(terminalreporter, config):
    n = getattr(config, "_gpu_deselected", 0)
    if n:
        terminalreporter.write_line(
            f"{n} gpu test(s) deselected: torch sees no CUDA device "
            f"(on a GPU machine they run; -m gpu makes them fail without one)"
        )


@pytest.fixture(autouse=True)
def _detectron2_catalogs_restored():
    """Dataset names a test registers (or re-registers elsewhere) in Detectron2's global catalogs
    are
    put back as they were after it, so no test sees another's datasets, or its deleted tmp folders.
    Only once Detectron2 is imported (the detection test modules import it at collection)."""
    import copy
    import sys

    if "detectron2.data" not in sys.modules:
        yield
        return
    from detectron2.data import DatasetCatalog, MetadataCatalog

    datasets, metadata = (
        dict(DatasetCatalog),
        {k: copy.deepcopy(v) for k, v in MetadataCatalog.items()},
    )
    yield
    DatasetCatalog.clear()
    DatasetCatalog.update(datasets)
    MetadataCatalog.clear()
    MetadataCatalog.update(metadata)
