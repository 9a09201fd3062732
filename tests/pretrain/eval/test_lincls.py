"""Linear protocol and backbone loading from MoCo (ours / official) and torchvision checkpoints."""

import json
import os
import sys

import pytest
import torch
import torchvision

from pretrain.engine.checkpoint import model_state_dict
from pretrain.eval.lincls import BackboneChangedError, check_backbone_unchanged, train_linear
from pretrain.io import atomic_torch_save
from pretrain.model.moco import MoCo
from pretrain.weights.backbone import CheckpointFormatError, infer_resnet_arch, load_backbone


@pytest.fixture(scope="module")
def moco_checkpoint(tmp_path_factory):
    """A checkpoint in our (= the official) layout, from the real MoCo model."""
    torch.manual_seed(0)
    moco = MoCo(arch="resnet18", dim=16, K=64, mlp=True)
    path = str(tmp_path_factory.mktemp("ckpt") / "checkpoint_0000010.pth")
    atomic_torch_save(
        {
            "epoch": 1,
            "iter": 0,
            "global_step": 10,
            "arch": "resnet18",
            "state_dict": model_state_dict(moco),
            "optimizer": {},
        },
        path,
    )
    return path, moco


def test_backbone_is_the_query_encoder_without_head(moco_checkpoint):
    path, moco = moco_checkpoint
    model, state = load_backbone(path, num_classes=5)
    assert isinstance(model, torchvision.models.ResNet) and model.fc.out_features == 5
    q = moco.encoder_q.state_dict()
    assert not any(k.startswith("fc.") for k in state)
    assert set(state) == {k for k in q if not k.startswith("fc.")}
    for k, v in model.state_dict().items():
        if not k.startswith("fc."):
            assert torch.equal(v, q[k]), k


def test_torchvision_state_dict_and_arch_inference(tmp_path):
    ref = torchvision.models.resnet34()
    path = str(tmp_path / "tv.pth")
    torch.save(ref.state_dict(), path)
    model, _ = load_backbone(path, num_classes=3)
    assert torch.equal(model.layer4[2].conv2.weight, ref.layer4[2].conv2.weight)
    with torch.device("meta"):
        r50 = torchvision.models.resnet50().state_dict()
        wide = torchvision.models.wide_resnet50_2().state_dict()
    assert infer_resnet_arch(r50) == "resnet50"
    assert infer_resnet_arch(wide) == "wide_resnet50_2"


def test_wrong_checkpoints_are_clear_errors(tmp_path):
    path = str(tmp_path / "other.pth")
    torch.save({"state_dict": {"linear.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointFormatError, match="encoder_q.conv1.weight"):
        load_backbone(path)
    with pytest.raises(FileNotFoundError):
        load_backbone(str(tmp_path / "missing.pth"))


def test_sanity_check_catches_a_modified_backbone(moco_checkpoint):
    model, state = load_backbone(moco_checkpoint[0], num_classes=2)
    check_backbone_unchanged(model, state)  # untouched: passes
    with torch.no_grad():
        model.fc.weight.add_(1.0)  # the fc may change
    check_backbone_unchanged(model, state)
    model.layer2[0].bn1.running_mean.add_(0.1)  # BN statistics count too
    with pytest.raises(BackboneChangedError, match="layer2.0.bn1.running_mean"):
        check_backbone_unchanged(model, state)


class _Killed(Exception):
    pass


def _kill_at(marker):
    """A printer that dies at the first line containing ``marker``: a run killed at that point."""

    def printer(line, **_):
        if marker in line:
            raise _Killed(line)

    return printer


def test_linear_protocol_trains_resumes_and_reports(moco_checkpoint, tiny_demo_data, tmp_path):
    ckpt, data = moco_checkpoint[0], tiny_demo_data["cls_root"]
    kw = dict(lr=1.0, schedule=(1,), batch_size=40, image_size=16, num_workers=0, print_freq=0)
    straight_out, killed_out = str(tmp_path / "straight"), str(tmp_path / "killed")
    straight = train_linear(ckpt, data, straight_out, epochs=2, printer=lambda *a, **k: None, **kw)
    assert (
        set(straight) >= {"top1", "top5", "best_top1"}
        and 0 <= straight["top1"] <= straight["top5"] <= 100
    )
    records = [json.loads(line) for line in open(os.path.join(straight_out, "metrics.jsonl"))]
    assert [r["epoch"] for r in records] == [1, 2]
    assert [r["lr"] for r in records] == [
        1.0,
        pytest.approx(0.1),
    ]  # dropped x0.1 at the schedule's epoch 1
    # A run killed in epoch 2 (after its last step, before its checkpoint) resumes at epoch 1 and
    # ends where the uninterrupted run ended: the same classifier, the same numbers.
    with pytest.raises(_Killed):
        train_linear(
            ckpt, data, killed_out, epochs=2, printer=_kill_at("[lincls] epoch 2/2 iter"), **kw
        )
    assert not os.path.exists(os.path.join(killed_out, "lincls_result.json"))
    logs = []
    resumed = train_linear(
        ckpt, data, killed_out, epochs=2, printer=lambda *a, **k: logs.append(a[0]), **kw
    )
    assert any("resumed" in line and "epoch 1" in line for line in logs)
    assert resumed == straight
    a, b = (
        torch.load(os.path.join(o, "lincls_checkpoint.pth"), weights_only=True)
        for o in (straight_out, killed_out)
    )
    assert a["fc"].keys() == b["fc"].keys() and all(
        torch.equal(a["fc"][k], b["fc"][k]) for k in a["fc"]
    )
    assert (
        json.load(open(os.path.join(killed_out, "lincls_result.json")))["top1"] == resumed["top1"]
    )
    with pytest.raises(FileExistsError, match="--force"):
        train_linear(ckpt, data, killed_out, epochs=2, printer=lambda *a, **k: None, **kw)


def test_linear_protocol_recipe_is_the_papers(moco_checkpoint, tmp_path, monkeypatch):
    """MoCo's linear protocol: SGD lr 30, momentum 0.9, weight decay 0, 100 epochs with lr x0.1 at
    60 and 80, batch 256; the classifier initialised normal(0, 0.01), bias 0, backbone frozen."""
    import inspect

    from pretrain.eval.lincls import build_linear_model, step_lr

    defaults = {k: p.default for k, p in inspect.signature(train_linear).parameters.items()}
    assert {
        k: defaults[k]
        for k in ("lr", "schedule", "momentum", "weight_decay", "epochs", "batch_size")
    } == {
        "lr": 30.0,
        "schedule": (60, 80),
        "momentum": 0.9,
        "weight_decay": 0.0,
        "epochs": 100,
        "batch_size": 256,
    }
    assert [step_lr(30.0, e, (60, 80)) for e in (0, 59, 60, 79, 80, 99)] == pytest.approx(
        [30, 30, 3, 3, 0.3, 0.3]
    )
    from pretrain.cli import lincls as cli

    captured = {}
    monkeypatch.setattr(cli, "train_linear", lambda *a, **k: captured.update(k))
    cli.main(["--checkpoint", "c", "--data", "d", "--out", "o"])
    assert {
        k: captured[k]
        for k in ("lr", "schedule", "momentum", "weight_decay", "epochs", "batch_size")
    } == {
        "lr": 30.0,
        "schedule": (60, 80),
        "momentum": 0.9,
        "weight_decay": 0.0,
        "epochs": 100,
        "batch_size": 256,
    }
    torch.manual_seed(0)
    backbone, fc, _ = build_linear_model(moco_checkpoint[0], num_classes=1000)
    assert (
        fc.weight.std().item() == pytest.approx(0.01, rel=0.02)
        and abs(fc.weight.mean().item()) < 1e-4
    )
    assert torch.equal(fc.bias, torch.zeros(1000))
    assert not any(p.requires_grad for p in backbone.parameters())


def write_class_folders(root, split_classes, n=4, size=24):
    """``root/<split>/<class>/<i>.png`` random images, e.g. ``{"train": "abc", "val": "ac"}``."""
    from PIL import Image

    rng = torch.Generator().manual_seed(0)
    for split, classes in split_classes.items():
        for c in classes:
            os.makedirs(os.path.join(root, split, c))
            for i in range(n):
                pixels = torch.randint(0, 256, (size, size, 3), dtype=torch.uint8, generator=rng)
                Image.fromarray(pixels.numpy()).save(os.path.join(root, split, c, f"{i}.png"))
    return str(root)


def test_train_and_val_with_different_class_folders_is_a_clear_error(tmp_path):
    # Val has no "b": its "c" images would get train's label for "b" and top-1 would be wrong.
    data = write_class_folders(tmp_path / "data", {"train": "abc", "val": "ac"})
    ckpt = str(tmp_path / "r18.pth")
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    with pytest.raises(
        ValueError,
        match=r"(?s)train classes \['a', 'b', 'c'\] differ from val classes "
        r"\['a', 'c'\].*only in train: \['b'\].*same class folders",
    ):
        train_linear(
            ckpt,
            data,
            str(tmp_path / "out"),
            epochs=1,
            batch_size=4,
            image_size=16,
            num_workers=0,
            device="cpu",
            printer=lambda *a, **k: None,
        )
    assert not os.path.exists(tmp_path / "out" / "lincls_result.json")
    # The supervised baseline reads its folders the same way
    # (pretrain.eval.classify.labeled_loaders).
    from pretrain.eval.supervised import train_supervised

    with pytest.raises(ValueError, match=r"only in train: \['b'\]"):
        train_supervised(
            data,
            str(tmp_path / "sup"),
            arch="resnet18",
            epochs=1,
            image_size=16,
            batch_size=4,
            num_workers=0,
            device="cpu",
        )


def test_loss_is_read_from_the_device_only_when_printed(tmp_path, monkeypatch):
    # 12 train images in batches of 4: 3 iterations, printed once (the epoch's last). Reading
    # the loss every step (loss.item()) would sync the host with the GPU 3 times.
    data = write_class_folders(tmp_path / "data", {"train": "ab", "val": "ab"}, n=6)
    ckpt = str(tmp_path / "r18.pth")
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    reads, item = [], torch.Tensor.item

    def counting_item(self):
        # Only reads by the protocol itself (directly, or via Tensor.__format__ in a print);
        # the DataLoader and the transforms read their own random draws.
        callers = {os.path.basename(sys._getframe(d).f_code.co_filename) for d in (1, 2, 3)}
        if callers & {"lincls.py", "classify.py"}:
            reads.append(tuple(self.shape))
        return item(self)

    logs = []
    monkeypatch.setattr(torch.Tensor, "item", counting_item)
    train_linear(
        ckpt,
        data,
        str(tmp_path / "out"),
        epochs=1,
        batch_size=4,
        image_size=16,
        num_workers=0,
        device="cpu",
        print_freq=100,
        printer=lambda *a, **k: logs.append(a[0]),
    )
    printed = [line for line in logs if " iter " in line]
    assert len(printed) == 1 and "iter 3/3 loss " in printed[0]
    float(printed[0].split(" loss ")[1].split()[0])  # the value itself, formatted as before
    assert len(reads) == len(printed)
