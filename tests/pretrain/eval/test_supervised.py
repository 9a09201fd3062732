"""Supervised baseline: learns, resumes, and writes a torchvision-format state dict."""
import json
import os

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from pretrain.eval.supervised import train_supervised


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


def test_supervised_learns_resumes_and_writes_torchvision_weights(colour_classes, tmp_path):
    out = str(tmp_path / "sup")
    kw = dict(arch="resnet18", image_size=16, batch_size=8, lr=1.6, num_workers=0, print_freq=0)  # 0.05 at batch 8
    logs = []
    train_supervised(colour_classes, out, epochs=4, printer=lambda *a, **k: logs.append(a[0]), **kw)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4]
    assert any("img/s" in line and "ETA" in line for line in logs)
    # Rerun of the finished run (e.g. the demo killed before its stage marker): its result, kept.
    final_path = os.path.join(out, "model_final.pth")
    final_bytes = open(final_path, "rb").read()
    os.remove(os.path.join(out, "classes.json"))  # killed between the final weights and classes.json
    logs.clear()
    again = train_supervised(colour_classes, out, epochs=4, printer=lambda *a, **k: logs.append(a[0]), **kw)
    assert again == records[-1]
    assert open(final_path, "rb").read() == final_bytes
    assert any("finished run with these settings" in line for line in logs) and not any("img/s" in line for line in logs)
    assert json.load(open(os.path.join(out, "classes.json"))) == ["blue", "red"]
    # Other settings, or --no-resume, must not pass off the old weights as the asked-for run.
    with pytest.raises(FileExistsError, match=r"seed=0 there, 1 asked.*--force"):
        train_supervised(colour_classes, out, epochs=4, seed=1, **kw)
    with pytest.raises(FileExistsError, match=r"epochs=4 there, 5 asked.*--force"):
        train_supervised(colour_classes, out, epochs=5, **kw)
    with pytest.raises(FileExistsError, match="--no-resume.*--force"):
        train_supervised(colour_classes, out, epochs=4, resume=False, **kw)

    # A run killed after epoch 4's checkpoint, asked for 5 epochs, continues at epoch 4.
    os.remove(os.path.join(out, "model_final.pth"))
    logs.clear()
    final = train_supervised(colour_classes, out, epochs=5, printer=lambda *a, **k: logs.append(a[0]), **kw)
    assert any("resumed" in line and "epoch 4" in line for line in logs)
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2, 3, 4, 5]
    # BN running statistics need a few dozen steps before eval-mode accuracy moves off chance.
    assert final["top1"] > 50.0, records  # 2 classes: chance is 50 %

    model = torchvision.models.resnet18(num_classes=2)
    state = torch.load(os.path.join(out, "model_final.pth"), weights_only=True)
    model.load_state_dict(state, strict=True)
    assert "conv1.weight" in state and "layer1.0.conv1.weight" in state and "fc.weight" in state
