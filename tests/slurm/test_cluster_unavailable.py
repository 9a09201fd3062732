"""Where the cluster cannot run (not root), the SLURM tests are told why: a skip naming it."""

import os

import pytest

from tests.slurm.slurm_cluster import Cluster, ClusterUnavailable


def test_not_root_is_a_clear_reason_not_a_start(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ClusterUnavailable, match="not root"):
        Cluster(tmp_path / "c").start()
    assert not (tmp_path / "c" / "pids").exists()  # nothing was started
