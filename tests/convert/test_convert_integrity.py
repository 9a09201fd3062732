"""Files that cannot be right are refused with the reason, and nothing is written."""

import argparse
import os
import pickle
import struct
import zipfile

import pytest
import torch

from convert import convert_checkpoint
from convert.digest import digest_problem, tensor_digest
from detection.cli.convert import main
from pretrain.io import CorruptCheckpointError, UnsafeCheckpointError
from pretrain.weights.integrity import IntegrityError
from pretrain.weights.safe_pickle import safe_pickle_load
from tests.convert.convert_layouts import moco_v2_checkpoint
from tests.convert.test_convert_safety import _RunsCode


def _moco_file(r50, tmp_path, edit=None, name="moco.pth"):
    """The official MoCo v2 checkpoint, after ``edit(state_dict)``."""
    obj = moco_v2_checkpoint(r50, 2048)
    if edit:
        edit(obj["state_dict"])
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def _drop(prefix):
    def edit(state):
        for k in [k for k in state if k.startswith("module.encoder_q." + prefix)]:
            del state[k]

    return edit


@pytest.mark.parametrize(
    "prefix,named",
    [
        ("bn1.", "bn1 (4)"),  # the stem BN: the partial file
        ("layer3.5.", "layer3.5 (15)"),  # one block
        ("layer4.", "layer4.0 (20), layer4.1 (15), layer4.2 (15)"),  # a whole stage
        ("conv1.", "conv1 (1)"),  # the stem conv
    ],
)
def test_missing_tensors_are_named_and_nothing_is_written(r50, tmp_path, prefix, named):
    path = _moco_file(r50, tmp_path, _drop(prefix))
    with pytest.raises(IntegrityError, match="not a complete ResNet-50") as err:
        convert_checkpoint(path, tmp_path / "out.pkl")
    assert named in str(err.value) and "under 'module.encoder_q.'" in str(err.value)
    assert not (tmp_path / "out.pkl").exists()


def test_wrong_shape_is_named_with_both_shapes(r50, tmp_path):
    def edit(state):
        state["module.encoder_q.conv1.weight"] = torch.randn(64, 4, 7, 7)  # one channel too many

    path = _moco_file(r50, tmp_path, edit)
    with pytest.raises(
        IntegrityError,
        match=r"conv1.weight is \[64, 4, 7, 7\], ResNet-50 has "
        r"\[64, 3, 7, 7\]",
    ):
        convert_checkpoint(path, tmp_path / "out.pkl")
    assert not (tmp_path / "out.pkl").exists()


def test_extra_block_and_cifar_stem_are_refused(r18, tmp_path):
    state = dict(r18.state_dict())
    state.update(
        {
            k.replace("layer3.1.", "layer3.2."): v
            for k, v in state.items()
            if k.startswith("layer3.1.")
        }
    )
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(IntegrityError, match=r"does not have: layer3.2 \(10\)"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out.pkl", target="fpn")
    # solo-learn's CIFAR ResNet: a 3x3 stride-1 stem, which Detectron2's stem cannot hold.
    state = dict(r18.state_dict(), **{"conv1.weight": torch.randn(64, 3, 3, 3)})
    torch.save(state, tmp_path / "cifar.pth")
    with pytest.raises(IntegrityError, match=r"conv1.weight is \[64, 3, 3, 3\]"):
        convert_checkpoint(tmp_path / "cifar.pth", tmp_path / "out.pkl", target="fpn")
    assert not (tmp_path / "out.pkl").exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(r18, tmp_path, value):
    state = {k: v.clone() for k, v in r18.state_dict().items()}
    state["layer2.0.conv1.weight"][0, 0, 0, 0] = value
    state["layer4.1.bn2.running_var"][3] = value
    torch.save({"state_dict": state}, tmp_path / "diverged.pth")
    with pytest.raises(
        IntegrityError,
        match=r"2 tensors hold NaN or Inf .*layer2.0.conv1.weight "
        r"\(1 values\), layer4.1.bn2.running_var",
    ):
        convert_checkpoint(tmp_path / "diverged.pth", tmp_path / "out.pkl", target="fpn")
    assert not (tmp_path / "out.pkl").exists()


def _record_span(path, suffix):
    """(start, size) of the stored bytes of the zip record whose name ends with ``suffix``."""
    with zipfile.ZipFile(path) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(suffix))
    raw = path.read_bytes()
    header = info.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[header + 26 : header + 30])
    return header + 30 + name_len + extra_len, info.file_size


@pytest.mark.parametrize("record", ["/data/5", "/data.pkl"])
def test_flipped_bit_inside_a_pth_is_caught_by_its_crc(r18, tmp_path, record):
    torch.save({"state_dict": r18.state_dict()}, tmp_path / "r18.pth")
    start, size = _record_span(tmp_path / "r18.pth", record)
    raw = bytearray((tmp_path / "r18.pth").read_bytes())
    raw[start + size // 2] ^= 0x10  # bit rot: one bit, in the middle of the record
    (tmp_path / "r18.pth").write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="damaged or truncated.*Bad CRC-32") as err:
        convert_checkpoint(tmp_path / "r18.pth", tmp_path / "out.pkl", target="fpn")
    assert "copy (or download) it again" in str(err.value)
    assert not (tmp_path / "out.pkl").exists()


def test_a_file_saved_with_crcs_switched_off_still_converts(r18, tmp_path):
    """torch.serialization.set_crc32_options(False) writes CRC 0 everywhere: nothing to check."""
    saved = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"state_dict": r18.state_dict()}, tmp_path / "nocrc.pth")
    finally:
        torch.serialization.set_crc32_options(saved)
    with zipfile.ZipFile(tmp_path / "nocrc.pth") as archive:
        assert {i.CRC for i in archive.infolist()} == {0}
    convert_checkpoint(tmp_path / "nocrc.pth", tmp_path / "out.pkl", target="fpn")


def test_a_flipped_weight_bit_loads_silently_without_the_crc_check(r18, tmp_path):
    """Why the check exists: torch.load itself reads the damaged tensor without complaint."""
    torch.save({"state_dict": r18.state_dict()}, tmp_path / "r18.pth")
    start, size = _record_span(tmp_path / "r18.pth", "/data/0")
    raw = bytearray((tmp_path / "r18.pth").read_bytes())
    raw[start + size // 2] ^= 0x10
    (tmp_path / "r18.pth").write_bytes(bytes(raw))
    loaded = torch.load(tmp_path / "r18.pth", weights_only=True)["state_dict"]
    assert not torch.equal(loaded["conv1.weight"], r18.state_dict()["conv1.weight"])


def test_truncated_pth_is_damaged_or_truncated(r18, tmp_path, capsys):
    torch.save({"state_dict": r18.state_dict()}, tmp_path / "r18.pth")
    data = (tmp_path / "r18.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) - 100])  # the end of the copy is lost
    assert main([str(tmp_path / "cut.pth"), str(tmp_path / "out.pkl"), "--target", "fpn"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "damaged or truncated" in err and "Traceback" not in err
    assert not (tmp_path / "out.pkl").exists()


def test_dino_args_namespace_is_allowed_but_code_inside_it_is_not(r18, tmp_path):
    marker = tmp_path / "pwned"
    good = {"state_dict": r18.state_dict(), "args": argparse.Namespace(arch="resnet18", lr=0.3)}
    torch.save(good, tmp_path / "good.pth")
    convert_checkpoint(tmp_path / "good.pth", tmp_path / "good.pkl", target="fpn")
    evil = {"state_dict": r18.state_dict(), "args": argparse.Namespace(arch=_RunsCode(marker))}
    torch.save(evil, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError, match="execute code"):
        convert_checkpoint(tmp_path / "evil.pth", tmp_path / "evil.pkl", target="fpn")
    assert not marker.exists() and not (tmp_path / "evil.pkl").exists()


def test_output_carries_a_digest_of_its_tensors(r50_converted):
    written = safe_pickle_load(r50_converted["c4"].output_path)
    assert written["tensor_sha256"] == tensor_digest(written["model"])
    assert digest_problem(written) is None
    name = "backbone.res2.0.conv1.weight"
    written["model"][name] = written["model"][name].copy()
    written["model"][name].flat[7] += 1e-3  # one weight changed after conversion
    assert "is damaged" in digest_problem(written)
    del written["tensor_sha256"]
    assert digest_problem(written) is None  # others' files (no digest): nothing to check


def _batch_inputs(folder, r50):
    """A folder of real-world failures next to one good file."""
    folder.mkdir()
    _moco_file(r50, folder, name="good.pth")
    _moco_file(r50, folder, _drop("bn1."), name="no_stem_bn.pth")

    def wrong(state):
        state["module.encoder_q.conv1.weight"] = torch.randn(64, 4, 7, 7)

    _moco_file(r50, folder, wrong, name="wrong_shape.pth")

    def nan(state):  # on a copy: the tensors are the session fixture's
        name = "module.encoder_q.layer1.0.conv1.weight"
        state[name] = state[name].clone()
        state[name][0] = float("nan")

    _moco_file(r50, folder, nan, name="diverged.pth")
    path = _moco_file(r50, folder, name="bitrot.pth")
    start, size = _record_span(path, "/data/7")
    raw = bytearray(path.read_bytes())
    raw[start + size // 3] ^= 0x01
    path.write_bytes(bytes(raw))
    return {
        "no_stem_bn.pth": "not a complete ResNet-50",
        "wrong_shape.pth": "wrong shape",
        "diverged.pth": "NaN or Inf",
        "bitrot.pth": "damaged or truncated",
    }


def test_batch_refuses_each_bad_file_in_one_line_and_converts_the_good_one(r50, tmp_path, capsys):
    bad = _batch_inputs(tmp_path / "in", r50)
    assert main(["--batch", str(tmp_path / "in"), str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["good.pkl"]
    assert "1 converted, 0 skipped (output exists), 4 failed" in captured.out
    for name, why in bad.items():
        line = next(ln for ln in captured.out.splitlines() if ln.startswith(f"  FAILED {name}: "))
        assert why in line, line
    assert "Traceback" not in captured.err + captured.out
    good = pickle.loads((tmp_path / "out" / "good.pkl").read_bytes())
    assert good["tensor_sha256"] == tensor_digest(good["model"])


def test_tool_refuses_a_partial_file_in_one_line_without_traceback(r50, tmp_path):
    import subprocess
    import sys

    from tests.paths import REPO

    path = _moco_file(r50, tmp_path, _drop("bn1."))
    command = [sys.executable, "tools/convert.py", str(path), str(tmp_path / "o.pkl")]
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(
        "error: the ResNet under 'module.encoder_q.' is not a complete "
        "ResNet-50, so nothing was written: missing 4 tensors: bn1 (4)"
    )
    assert not (tmp_path / "o.pkl").exists()


def test_resnet_variants_detectron2_does_not_build_are_refused(r18, tmp_path):
    # timm's resnet18d: a deep stem (conv1.0/.1/.3/.4/.6) instead of one 7x7 conv.
    state = {k: v for k, v in r18.state_dict().items() if k != "conv1.weight"}
    state.update(
        {
            "conv1.0.weight": torch.randn(32, 3, 3, 3),
            "conv1.1.weight": torch.ones(32),
            "conv1.3.weight": torch.randn(32, 32, 3, 3),
            "conv1.4.weight": torch.ones(32),
            "conv1.6.weight": torch.randn(64, 32, 3, 3),
        }
    )
    torch.save(state, tmp_path / "resnet18d.pth")
    with pytest.raises(IntegrityError, match=r"missing 1 tensors: conv1 \(1\)"):
        convert_checkpoint(tmp_path / "resnet18d.pth", tmp_path / "out.pkl", target="fpn")
    # SwAV's resnet50w2: the stem is twice as wide too, which torchvision's ResNet never is.
    state = dict(
        r18.state_dict(),
        **{"conv1.weight": torch.randn(128, 3, 7, 7), "bn1.weight": torch.ones(128)},
    )
    torch.save(state, tmp_path / "w2.pth")
    with pytest.raises(IntegrityError, match=r"conv1.weight is \[128, 3, 7, 7\].*bn1.weight is "):
        convert_checkpoint(tmp_path / "w2.pth", tmp_path / "out.pkl", target="fpn")
    assert not (tmp_path / "out.pkl").exists()
