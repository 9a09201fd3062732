"""Untrusted files never run code; outputs are never overwritten by accident, never half-written."""

import os
import pickle

import numpy as np
import pytest
import torch

from convert import OutputExistsError, convert_checkpoint
from pretrain.io import UnsafeCheckpointError


class _RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_pkl(path, marker):
    # Looks like weights: numpy arrays with ResNet names, plus the payload.
    weights = {"conv1.weight": np.zeros((64, 3, 7, 7), np.float32), "payload": _RunsCode(marker)}
    with open(path, "wb") as f:
        pickle.dump(weights, f)


def test_malicious_pkl_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    _malicious_pkl(tmp_path / "weights.pkl", marker)
    with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|nt.system") as err:
        convert_checkpoint(tmp_path / "weights.pkl", tmp_path / "out.pkl")
    assert "nothing in it ran" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "out.pkl").exists()


def test_verify_refuses_a_malicious_pkl_before_detectron2_unpickles_it(tmp_path):
    from detection.verify import verify_converted
    from tests.convert.convert_layouts import C4_CONFIG

    marker = tmp_path / "pwned"
    _malicious_pkl(tmp_path / "weights.pkl", marker)
    with pytest.raises(UnsafeCheckpointError):
        verify_converted(tmp_path / "weights.pkl", C4_CONFIG)
    assert not marker.exists()


def test_pth_that_needs_code_is_refused_and_nothing_runs(r18, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": r18.state_dict(), "args": _RunsCode(marker)}, tmp_path / "ckpt.pth")
    assert not marker.exists()  # saving does not run it
    with pytest.raises(UnsafeCheckpointError, match="execute code"):
        convert_checkpoint(tmp_path / "ckpt.pth", tmp_path / "out.pkl")
    assert not marker.exists()
    assert not (tmp_path / "out.pkl").exists()


def test_existing_output_needs_force_and_is_replaced_atomically(r18, tmp_path):
    torch.save(r18.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "out" / "r18.pkl"
    out.parent.mkdir()
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="--force"):
        convert_checkpoint(tmp_path / "tv.pth", out, target="fpn")
    assert out.read_bytes() == b"precious"
    convert_checkpoint(tmp_path / "tv.pth", out, target="fpn", force=True)
    assert pickle.loads(out.read_bytes())["__author__"] == "moco-transfer"
    assert os.listdir(out.parent) == ["r18.pkl"]  # no temporary files left behind


def test_bad_paths_say_what_to_do(r18, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        convert_checkpoint(tmp_path / "missing.pth", tmp_path / "out.pkl")
    torch.save(r18.state_dict(), tmp_path / "tv.pth")
    with pytest.raises(ValueError, match=r"must end in \.pkl"):
        convert_checkpoint(tmp_path / "tv.pth", tmp_path / "out.pth")
    (tmp_path / "truncated.pkl").write_bytes(pickle.dumps({"a": 1})[:5])
    with pytest.raises(pickle.UnpicklingError, match="not a readable pickle"):
        convert_checkpoint(tmp_path / "truncated.pkl", tmp_path / "out.pkl")
