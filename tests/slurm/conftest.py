"""The real SLURM cluster of the SLURM tests (tests/slurm/slurm_cluster.py), once per session.

Started only when a test marked ``slurm`` asks for it; ``-m "not slurm"`` deselects them all.
A machine that cannot host it (not root, no apt-get) skips them with the reason; one that can but
fails to start it errors, never passes. ``REQUIRE_SLURM=1`` (set by .ci/run) turns the skip into
a failure.
"""

import os
import time

import pytest

from tests.slurm.slurm_cluster import Cluster, ClusterUnavailable

_timings = {}


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    t0 = time.monotonic()
    cluster = Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except ClusterUnavailable as e:
        if os.environ.get("REQUIRE_SLURM") == "1":  # .ci/run: CI must run them, not skip them
            pytest.fail(f"REQUIRE_SLURM=1 but no SLURM cluster can run here: {e}")
        pytest.skip(f"no SLURM cluster on this machine: {e}")
    _timings.update(cluster.timings, version=cluster.version(), total_s=time.monotonic() - t0)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # submitit and sacct in this process use the cluster too
    yield cluster
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    cluster.stop()


def pytest_terminal_summary(terminalreporter):
    if _timings:
        terminalreporter.write_line(
            f"SLURM cluster ({_timings['version']}): install {_timings['install_s']:.1f} s, "
            f"daemons up in {_timings['start_s']:.1f} s"
        )
