"""Supervised baseline: learns, resumes, and writes a torchvision-format state dict."""

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from pretrain.eval.supervised import FINAL, train_supervised


@pytest.fixture(scope="module")
def colour_classes(tmp_path_factory):
    """Two easy classes (reddish vs bluish noise) so a few SGD steps must beat chance."""
    root = tmp_path_factory.mktemp("colours")
    rng = np.random.default_rng(0)
    for split, n in (("train", 32), ("val", 8)):
        for c, channel in (("blue", 2), ("red", 0)):
            os.makedirs(root / split / c)
            for i in range(n):
                arr = rng.integers(0, 90, (20, 20, 3), dtype=np.uint8)
                arr[..., channel] += 150
                Image.fromarray(arr).save(root / split / c / f"{i}.png")
    return str(root)


class _Killed(Exception):
    pass


def _kill_at(marker, logs):
    """A printer that dies at the first line containing ``marker``: a run killed at that point."""

    def printer(line, **_):
        logs.append(line)
        if marker in line:
            raise _Killed(line)

    return printer


def _weights(path):
    return torch.load(path, weights_only=True)


def test_supervised_learns_resumes_and_writes_torchvision_weights(colour_classes, tmp_path):
    kw = dict(
        arch="resnet18", image_size=16, batch_size=8, lr=1.6, num_workers=0, print_freq=0
    )  # 0.05 at batch 8
    out = str(tmp_path / "sup")
    logs = []
    final = train_supervised(
        colour_classes, out, epochs=5, printer=lambda *a, **k: logs.append(a[0]), **kw
    )
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    assert any("img/s" in line and "ETA" in line for line in logs)
    # It learned: the two colours are separable, so every validation image is right and the loss
    # is far below that of the same run with lr=0 (weights never move; only BN statistics do).
    frozen = train_supervised(
        colour_classes,
        str(tmp_path / "lr0"),
        epochs=2,
        printer=lambda *a, **k: None,
        **dict(kw, lr=0.0),
    )
    assert final["top1"] == 100.0, records
    assert (
        final["loss"] < 0.1 * frozen["loss"] and final["train_loss"] < 0.1 * frozen["train_loss"]
    ), (records, frozen)

    # A run killed inside epoch 4 resumes from epoch 3's checkpoint and ends with the very weights
    # of the uninterrupted run (model, optimizer momentum, BN statistics and RNG all restored).
    killed = str(tmp_path / "killed")
    with pytest.raises(_Killed):
        train_supervised(
            colour_classes, killed, epochs=5, printer=_kill_at("epoch 4/5 iter", []), **kw
        )
    assert not os.path.exists(os.path.join(killed, FINAL))
    logs.clear()
    resumed = train_supervised(
        colour_classes, killed, epochs=5, printer=lambda *a, **k: logs.append(a[0]), **kw
    )
    assert any("resumed" in line and "epoch 3" in line for line in logs)
    assert resumed == final
    theirs, ours = _weights(os.path.join(killed, FINAL)), _weights(os.path.join(out, FINAL))
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)

    # Rerun of the finished run (e.g. the demo killed before its stage marker): its result, kept.
    final_path = os.path.join(out, FINAL)
    final_bytes = open(final_path, "rb").read()
    os.remove(
        os.path.join(out, "classes.json")
    )  # killed between the final weights and classes.json
    logs.clear()
    again = train_supervised(
        colour_classes, out, epochs=5, printer=lambda *a, **k: logs.append(a[0]), **kw
    )
    assert again == records[-1]
    assert open(final_path, "rb").read() == final_bytes
    assert any("finished run with these settings" in line for line in logs) and not any(
        "img/s" in line for line in logs
    )
    assert json.load(open(os.path.join(out, "classes.json"))) == ["blue", "red"]
    # Other settings, or --no-resume, must not pass off the old weights as the asked-for run.
    with pytest.raises(FileExistsError, match=r"seed=0 there, 1 asked.*--force"):
        train_supervised(colour_classes, out, epochs=5, seed=1, **kw)
    with pytest.raises(FileExistsError, match=r"epochs=5 there, 6 asked.*--force"):
        train_supervised(colour_classes, out, epochs=6, **kw)
    with pytest.raises(FileExistsError, match="--no-resume.*--force"):
        train_supervised(colour_classes, out, epochs=5, resume=False, **kw)

    # A run killed after epoch 5's checkpoint, asked for 6 epochs, continues at epoch 5.
    os.remove(final_path)
    logs.clear()
    train_supervised(colour_classes, out, epochs=6, printer=lambda *a, **k: logs.append(a[0]), **kw)
    assert any("resumed" in line and "epoch 5" in line for line in logs)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5, 6]

    model = torchvision.models.resnet18(num_classes=2)
    state = torch.load(final_path, weights_only=True)
    model.load_state_dict(state, strict=True)
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state and "fc.weight" in state
