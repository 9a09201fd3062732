"""The loop's contract with its user: clear errors first, progress files, no silent overwrite."""

import json
import os

import pytest
import torch

import pretrain.engine.train as train_module
from pretrain.cli.pretrain import main as cli_main
from pretrain.data.folder import DataPathError
from pretrain.engine.checkpoint import list_checkpoints
from pretrain.engine.config import ConfigError, load_config
from pretrain.engine.train import lr_at, train
from pretrain.weights.backbone import load_backbone
from tests.paths import CONFIGS
from tests.pretrain.eval.knn_by_hand import knn_top1_by_hand


def tiny_cfg(**top):
    cfg = {
        "model": {"arch": "resnet18", "dim": 16, "K": 32, "mlp": True, "T": 0.2, "bn_splits": 2},
        "data": {"aug": "v2", "crop_size": 32, "num_workers": 0, "samples_per_epoch": 16},
        "optim": {"lr": 0.03, "base_batch_size": 8, "epochs": 1},
        "batch_size": 8,
        "checkpoint": {"every_iters": 100, "keep_last": 2},
        "log": {"every_iters": 1, "tensorboard": True},
        "device": "cpu",
    }
    cfg.update(top)
    return load_config(None, cfg)


def test_missing_or_empty_data_fails_before_any_model_is_built(tmp_path, monkeypatch):
    def no_model(cfg):
        raise AssertionError("the model was built before the data path was checked")

    monkeypatch.setattr(train_module, "build_model", no_model)
    with pytest.raises(
        DataPathError, match=r"(?s)data path not found: .*no_such_folder.*tools/make_demo_data.py"
    ):
        train(tiny_cfg(), tmp_path / "no_such_folder", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataPathError, match=r"(?s)no images \(.*\) found under .*empty.*expected"):
        train(tiny_cfg(), tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_run_writes_progress_and_refuses_to_overwrite(tiny_demo_data, tmp_path, capsys):
    data = tiny_demo_data["unlabeled_root"]
    out = tmp_path / "run"
    args = [
        "--config",
        os.path.join(CONFIGS, "pretrain", "demo.yaml"),
        "--data",
        data,
        "--out",
        str(out),
        "model.K=32",
        "model.dim=16",
        "batch_size=8",
        "model.bn_splits=2",
        "data.crop_size=32",
        "data.num_workers=0",
        "data.samples_per_epoch=16",
        "optim.epochs=1",
        "log.every_iters=1",
        "--opts",
        "device",
        "cpu",
    ]
    assert cli_main(args) == 0
    console = capsys.readouterr().out
    assert "img/s" in console and "ETA" in console and "epoch 0 [2/2]" in console
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(
        {"loss", "lr", "images_per_s", "eta_s", "epoch", "sim_pos", "sim_neg", "sim_qq"} <= set(r)
        for r in records
    )
    assert all(-1.0 <= r[k] <= 1.0 for r in records for k in ("sim_pos", "sim_neg", "sim_qq"))
    assert all(0.0 <= r["pos_top1"] <= 100.0 for r in records)
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "similarity_curve.png").stat().st_size > 1000
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())
    assert [s for s, _ in list_checkpoints(out)] == [2] and (out / "config.yaml").exists()

    assert cli_main(args) == 2
    assert "--resume auto" in capsys.readouterr().err
    assert cli_main(args + ["optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err
    # Resuming a finished run is a no-op that keeps everything.
    assert cli_main(args + ["--resume", "auto"]) == 0
    assert [s for s, _ in list_checkpoints(out)] == [2]


def test_knn_monitor_starts_at_random_init_and_leaves_the_trajectory_alone(
    tiny_demo_data, tmp_path
):
    data = tiny_demo_data["unlabeled_root"]
    cls_root = tiny_demo_data["cls_root"]
    knn = {"every_epochs": 1, "path": cls_root, "k": 5, "batch_size": 64}
    cfg = tiny_cfg(deterministic=True, knn=knn)
    cfg["optim"]["epochs"] = 2
    summary = train(cfg, data, tmp_path / "with_knn")
    assert [e for e, _ in summary["knn"]] == [0, 1, 2]  # epoch 0 = the network at random init
    # The last figure is the kNN of the last weights (the final checkpoint's), computed by hand.
    final, _ = load_backbone(summary["checkpoint"])
    by_hand = knn_top1_by_hand(
        final, os.path.join(cls_root, "train"), os.path.join(cls_root, "val"), image_size=32, k=5
    )
    assert summary["knn"][-1][1] == pytest.approx(by_hand)
    evals = [
        json.loads(line)
        for line in (tmp_path / "with_knn" / "metrics.jsonl").read_text().splitlines()
    ]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert [(r["epoch"], r["step"]) for r in evals] == [(0, 0), (1, 2), (2, 4)]
    assert [r["knn_top1"] for r in evals] == [top1 for _, top1 in summary["knn"]]
    # Random init is also evaluated with its placeholder BN statistics replaced by estimates.
    assert [("knn_top1_precise_bn" in r) for r in evals] == [True, False, False]
    assert evals[0]["knn_top1_precise_bn"] != evals[0]["knn_top1"]
    assert (tmp_path / "with_knn" / "knn_curve.png").stat().st_size > 1000

    plain = tiny_cfg(deterministic=True)
    plain["optim"]["epochs"] = 2
    without = train(plain, data, tmp_path / "without_knn")
    a = torch.load(summary["checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(without["checkpoint"], weights_only=True)["state_dict"]
    for name, value in a.items():  # evaluating draws nothing from the training RNG
        assert torch.equal(value, b[name]), name


def test_compiled_run_matches_eager_run(tiny_demo_data, tmp_path):
    """``compile``: torch.compile'd encoders compute what the eager loop computes. The ``aot_eager``
    backend (Dynamo capture + AOTAutograd, no code generation) checks our plumbing in seconds;
    inductor (``compile: true``) takes minutes to compile a ResNet on a CPU."""
    import torch._dynamo.utils

    data = tiny_demo_data["unlabeled_root"]
    eager = train(tiny_cfg(deterministic=True), data, tmp_path / "eager")
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = train(tiny_cfg(deterministic=True, compile="aot_eager"), data, tmp_path / "compiled")
    assert counters["stats"]["unique_graphs"] >= 2, dict(
        counters["stats"]
    )  # both encoders were captured
    assert eager["global_step"] == compiled["global_step"] == 2
    a = torch.load(eager["checkpoint"], weights_only=True)["state_dict"]
    b = torch.load(compiled["checkpoint"], weights_only=True)["state_dict"]
    assert a.keys() == b.keys()  # compiling in place keeps the official names (no "_orig_mod.")
    for name, value in a.items():
        torch.testing.assert_close(b[name], value, rtol=1e-4, atol=1e-5, msg=name)
    assert compiled["final_loss"] == pytest.approx(eager["final_loss"], rel=1e-4)

    with pytest.raises(ConfigError, match="compile must be"):
        tiny_cfg(compile=3)
    with pytest.raises(ValueError, match="unknown torch.compile backend"):
        train(tiny_cfg(compile="no_such_backend"), data, tmp_path / "bad")


def test_schedules():
    step = load_config(
        None, {"optim": {"schedule": "step", "milestones": [120, 160], "epochs": 200}}
    )
    assert [lr_at(step, e, 0.03) for e in (0, 119.9, 120, 160.5)] == pytest.approx(
        [0.03, 0.03, 0.003, 0.0003]
    )
    cos = load_config(None, {"optim": {"schedule": "cosine", "epochs": 200, "warmup_epochs": 10}})
    assert lr_at(cos, 5, 0.03) == pytest.approx(0.015)
    assert lr_at(cos, 100, 0.03) == pytest.approx(0.015) and lr_at(cos, 200, 0.03) == pytest.approx(
        0.0
    )
