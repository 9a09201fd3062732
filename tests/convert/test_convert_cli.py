"""tools/convert.py: one file with --verify, a folder with --batch, errors without tracebacks."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from detection.cli.convert import main
from detection.config_lookup import resolve_config_path
from tests.convert.convert_layouts import FPN_CONFIG, backbone_state
from tests.paths import REPO

# The demo's kind of config: our MoCo FPN task config with a ResNet-18.
R18_FPN_MOCO_YAML = f"""\
_BASE_: "{resolve_config_path(FPN_CONFIG)}"
MODEL:
  RESNETS:
    DEPTH: 18
    RES2_OUT_CHANNELS: 64
"""


def _moco_r18(r18):
    q = backbone_state(r18)
    state = {"module.encoder_q." + k: v for k, v in q.items()}
    state.update({"module.encoder_k." + k: torch.zeros_like(v) for k, v in q.items()})
    state["module.queue"] = torch.randn(8, 16)
    state["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    return {"epoch": 1, "arch": "resnet18", "state_dict": state}


def test_single_file_with_verify(r18, tmp_path, capsys):
    config = tmp_path / "r18_fpn_moco.yaml"
    config.write_text(R18_FPN_MOCO_YAML)
    torch.save(_moco_r18(r18), tmp_path / "moco_r18.pth.tar")
    out = tmp_path / "r18_fpn.pkl"
    code = main(
        [str(tmp_path / "moco_r18.pth.tar"), str(out), "--target", "fpn", "--verify", str(config)]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "source: moco, ResNet-18" in printed and "MoCo queue" in printed  # conversion report
    assert (
        "OK: 100 tensors loaded" in printed and "backbone.bottom_up.res5" in printed
    )  # load table
    assert "features vs. the source ResNet: OK" in printed
    # A config typo fails before anything is converted.
    assert (
        main(
            [str(tmp_path / "moco_r18.pth.tar"), str(tmp_path / "x.pkl"), "--verify", "no_such_cfg"]
        )
        == 1
    )
    assert "no_such_cfg" in capsys.readouterr().err and not (tmp_path / "x.pkl").exists()
    # So does a --target whose names the config's model does not use.
    assert (
        main([str(tmp_path / "moco_r18.pth.tar"), str(tmp_path / "x.pkl"), "--verify", str(config)])
        == 1
    )
    assert "needs --target fpn" in capsys.readouterr().err and not (tmp_path / "x.pkl").exists()
    # A second run must not replace the file.
    before = out.read_bytes()
    assert main([str(tmp_path / "moco_r18.pth.tar"), str(out), "--target", "fpn"]) == 1
    assert "--force" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_batch_converts_skips_and_reports_failures(r18, tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    torch.save(_moco_r18(r18), inputs / "moco_r18.pth.tar")
    torch.save(r18.state_dict(), inputs / "supervised_r18.pth")
    torch.save(r18.state_dict(), inputs / "kept.pth")
    (outputs / "kept.pkl").write_bytes(b"made by the user")
    with open(inputs / "detectron2_already.pkl", "wb") as f:
        pickle.dump(
            {
                "model": {"stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32)},
                "__author__": "Detectron2",
            },
            f,
        )
    (inputs / "notes.txt").write_text("not a checkpoint")

    code = main(["--batch", str(inputs), str(outputs), "--target", "fpn"])
    captured = capsys.readouterr()
    assert code == 1  # one input failed
    assert sorted(p.name for p in outputs.iterdir()) == [
        "kept.pkl",
        "moco_r18.pkl",
        "supervised_r18.pkl",
    ]
    assert (outputs / "kept.pkl").read_bytes() == b"made by the user"
    assert "2 converted, 1 skipped (output exists), 1 failed" in captured.out
    assert "FAILED detectron2_already.pkl" in captured.out and "needs no conversion" in captured.err
    for name in ("moco_r18.pkl", "supervised_r18.pkl"):
        assert pickle.loads((outputs / name).read_bytes())["source"]["format"] in (
            "moco",
            "torchvision",
        )

    (inputs / "detectron2_already.pkl").unlink()
    assert main(["--batch", str(inputs), str(outputs), "--target", "fpn", "--force"]) == 0
    assert "3 converted, 0 skipped (output exists), 0 failed" in capsys.readouterr().out
    assert (outputs / "kept.pkl").read_bytes() != b"made by the user"


def test_tool_reports_bad_input_without_traceback(tmp_path, repo_stays_clean):
    torch.save({"state_dict": {"student.blocks.0.weight": torch.zeros(2)}}, tmp_path / "vit.pth")
    result = subprocess.run(
        [sys.executable, "tools/convert.py", str(tmp_path / "vit.pth"), str(tmp_path / "out.pkl")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("error: unknown checkpoint layout")
    assert "Traceback" not in result.stderr


def _bad_checkpoints(folder, r18):
    """Files a batch folder really holds after an interrupted copy or a stray save."""
    torch.save(_moco_r18(r18), folder / "whole.pth")
    data = (folder / "whole.pth").read_bytes()
    (folder / "whole.pth").unlink()
    (folder / "truncated.pth").write_bytes(data[: len(data) // 2])
    (folder / "empty.pth").write_bytes(b"")
    (folder / "garbage.pth").write_bytes(b"hello world, not a checkpoint")
    torch.save({0: 1, "a": 2}, folder / "mixed_keys.pth")  # keys sorted() cannot compare
    return ["empty.pth", "garbage.pth", "mixed_keys.pth", "truncated.pth"]


@pytest.mark.parametrize("name", ["empty.pth", "garbage.pth", "mixed_keys.pth", "truncated.pth"])
def test_unreadable_checkpoint_is_a_one_line_error(r18, tmp_path, capsys, name):
    _bad_checkpoints(tmp_path, r18)
    assert main([str(tmp_path / name), str(tmp_path / "out.pkl")]) == 1  # no exception escapes
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    assert ("not a readable checkpoint" in err) if name != "mixed_keys.pth" else ("['a', 0]" in err)
    assert not (tmp_path / "out.pkl").exists()


def test_batch_reports_each_bad_file_and_converts_the_rest(r18, tmp_path, capsys):
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    bad = _bad_checkpoints(inputs, r18)
    torch.save(_moco_r18(r18), inputs / "moco_r18.pth.tar")

    code = main(["--batch", str(inputs), str(outputs), "--target", "fpn"])
    captured = capsys.readouterr()
    assert code == 1
    assert sorted(p.name for p in outputs.iterdir()) == ["moco_r18.pkl"]
    assert "1 converted, 0 skipped (output exists), 4 failed" in captured.out
    for name in bad:
        assert f"FAILED {name}: " in captured.out
    assert "Traceback" not in captured.err


def test_failed_verify_writes_nothing_and_keeps_the_users_file(r18, tmp_path, capsys):
    torch.save(_moco_r18(r18), tmp_path / "moco_r18.pth.tar")
    out = tmp_path / "out" / "r18.pkl"
    # An R18 file for the R50 FPN config: converts, then fails --verify (shape mismatch).
    args = [str(tmp_path / "moco_r18.pth.tar"), str(out), "--target", "fpn", "--verify", FPN_CONFIG]
    assert main(args) == 1
    assert os.listdir(out.parent) == []  # no output, no staging folder left behind
    captured = capsys.readouterr()
    assert "verification failed" in captured.err and "was not written" in captured.err
    # The user's own file, even with --force, is only replaced by a verified conversion.
    out.write_bytes(b"made by the user")
    assert main(args + ["--force"]) == 1
    assert out.read_bytes() == b"made by the user" and os.listdir(out.parent) == ["r18.pkl"]


def test_a_conversion_killed_while_replacing_its_output_leaves_the_old_one(r18, tmp_path):
    """A real kill: tools/convert.py --force in a child whose output write is cut off by
    the kernel.
    """
    from tests.killed_write import run_killed_mid_write

    src, other = tmp_path / "moco_r18.pth.tar", tmp_path / "other.pth.tar"
    torch.save(_moco_r18(r18), src)
    state = _moco_r18(r18)
    state["state_dict"] = {
        k: v + 1 if v.is_floating_point() else v for k, v in state["state_dict"].items()
    }
    torch.save(state, other)
    out = tmp_path / "out" / "r18_fpn.pkl"
    out.parent.mkdir()
    assert main([str(src), str(out), "--target", "fpn"]) == 0
    before = out.read_bytes()
    run_killed_mid_write(
        os.path.join(REPO, "tools", "convert.py"),
        [other, out, "--target", "fpn", "--force"],
        limit_bytes=len(before) // 2,
        cwd=tmp_path,
    )
    partial = [p for p in os.listdir(out.parent) if p != out.name]
    assert (
        len(partial) == 1 and os.path.getsize(out.parent / partial[0]) == len(before) // 2
    )  # killed mid-write
    assert out.read_bytes() == before
    with open(out, "rb") as f:
        assert pickle.load(f)["source"]["file"].endswith("moco_r18.pth.tar")
    # Run again unharmed: the new conversion replaces it whole.
    assert main([str(other), str(out), "--target", "fpn", "--force"]) == 0
    with open(out, "rb") as f:
        assert pickle.load(f)["source"]["file"].endswith("other.pth.tar")
