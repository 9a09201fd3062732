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
    """Paths (see ``detection.demo_data.demo_data_paths``) of a tiny demo data set, generated once per session.

    200 digit scans (160 train / 40 val, 64x64 RGB), 24 trainval and 8 test 160x160 scenes.
    Treat it as read-only: it is shared by every test in the session.
    """
    from detection.demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("tiny_demo_data"), verbose=False, **TINY_DEMO_DATA)


@pytest.fixture
def one_thread():
    """Tiny tensors: OpenMP threads only add synchronisation (on a busy 2-core machine, whole
    seconds of spin-waiting per step); one intra-op thread runs these models several times faster."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
