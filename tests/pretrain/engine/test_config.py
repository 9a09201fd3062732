"""Recipes: _BASE_ inheritance, overrides, validation, the paper's numbers in the shipped YAMLs."""

import os

import pytest

from pretrain.engine.config import (
    ConfigError,
    check_for_world,
    load_config,
    parse_overrides,
    resume_differences,
    scaled_lr,
)
from tests.paths import CONFIGS

ROOT = os.path.join(CONFIGS, "pretrain")


def recipe(name, overrides=None):
    return load_config(os.path.join(ROOT, name), overrides)


def test_moco_v1_recipe_matches_paper():
    c = recipe("moco_v1.yaml")
    assert c["model"] == {
        "arch": "resnet50",
        "dim": 128,
        "K": 65536,
        "m": 0.999,
        "T": 0.07,
        "mlp": False,
        "bn_splits": 1,
        "shuffle": "auto",
        "queue_init": "random",
    }  # random: Sec. 3.2
    assert c["data"]["aug"] == "v1" and c["data"]["crop_size"] == 224
    o = c["optim"]
    assert (
        o["lr"],
        o["momentum"],
        o["weight_decay"],
        o["schedule"],
        o["milestones"],
        o["epochs"],
    ) == (0.03, 0.9, 1e-4, "step", [120, 160], 200)
    assert scaled_lr(c, world_size=8) == pytest.approx(0.03)  # 8 GPUs x 32 = 256


def test_moco_v2_inherits_and_800ep_inherits_v2():
    v2 = recipe("moco_v2.yaml")
    assert v2["model"]["mlp"] is True and v2["model"]["T"] == 0.2 and v2["data"]["aug"] == "v2"
    assert (
        v2["optim"]["schedule"] == "cosine"
        and v2["optim"]["epochs"] == 200
        and v2["model"]["K"] == 65536
    )
    long = recipe("moco_v2_800ep.yaml")
    assert (
        long["optim"]["epochs"] == 800
        and long["model"] == v2["model"]
        and long["data"] == v2["data"]
    )


def test_demo_recipe_is_small():
    d = recipe("demo.yaml")
    assert d["model"]["arch"] in ("resnet18", "resnet50") and d["model"]["mlp"]
    assert 1024 <= d["model"]["K"] <= 4096 and 2 <= d["model"]["bn_splits"] <= 8
    assert 32 <= d["data"]["crop_size"] <= 64 and d["batch_size"] % d["model"]["bn_splits"] == 0
    # The session-7 search's recipe (README Status): views of one scan, crops only, no mirror.
    assert (d["data"]["positives"], d["data"]["aug"], d["data"]["hflip"]) == (
        "folder",
        "crop",
        False,
    )
    assert d["data"]["in_memory"] and d["data"]["crop_scale"] == [0.5, 1.0]
    # The paper's recipes stay the paper's.
    v2 = recipe("moco_v2.yaml")
    assert (v2["data"]["positives"], v2["data"]["aug"], v2["data"]["hflip"]) == (
        "crops",
        "v2",
        True,
    )


def test_overrides_both_styles_and_yaml_values():
    c = recipe(
        "moco_v2.yaml",
        ["optim.lr=0.06", "model.K", "4096", "optim.milestones=[10,20]", "knn.path=null"],
    )
    assert (
        c["optim"]["lr"] == 0.06
        and c["model"]["K"] == 4096
        and c["optim"]["milestones"] == [10, 20]
    )
    assert parse_overrides(["a.b=true", "c", "1e-3"]) == {"a": {"b": True}, "c": "1e-3"}


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'optim.lr'"):
        recipe("moco_v1.yaml", ["optim.lrr=0.1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("amp=fp8", "amp must be one of"),
        ("model.bn_splits=3", "multiple of model.bn_splits"),
        ("optim.weight_decay=1e-4", "write 1.0e-4"),  # YAML reads 1e-4 as a string
        ("model.m=1.0", r"model.m must be in \[0, 1\)"),
        ("knn.every_epochs=1", "knn.path is not"),
        ("data.decode=gpu", "data.decode must be one of"),
        ("compile=3", "compile must be"),
    ],
)
def test_bad_values_are_clear_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        recipe("moco_v1.yaml", [override])


def test_device_decode_needs_the_fast_pipeline():
    with pytest.raises(ConfigError, match="data.decode=device needs the fast data pipeline"):
        recipe("moco_v2.yaml", ["data.decode=device", "data.pipeline=reference"])
    assert recipe("moco_v2.yaml", ["data.decode=device"])["data"]["pipeline"] == "auto"


def test_base_cycle_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(FileNotFoundError, match="configs/pretrain"):
        load_config(tmp_path / "missing.yaml")


def test_what_only_the_launch_decides_is_checked_at_start():
    cfg = recipe("demo.yaml", {"batch_size": 64, "model": {"K": 96}})
    check_for_world(cfg, 1)
    with pytest.raises(ConfigError, match="64 x 2 processes = 128 keys per step > model.K 96"):
        check_for_world(cfg, 2)
    ddp = recipe("demo.yaml", {"model": {"shuffle": "ddp"}})
    check_for_world(ddp, 2)
    with pytest.raises(ConfigError, match="shuffle=ddp .* this is one process"):
        check_for_world(ddp, 1)


def test_resume_differences_name_each_changed_setting():
    saved = recipe("demo.yaml")
    now = recipe("demo.yaml", {"optim": {"lr": 0.01}, "model": {"T": 0.1}})
    assert resume_differences(saved, now) == ["model.T: 0.2 -> 0.1", "optim.lr: 0.02 -> 0.01"]
    assert resume_differences(saved, recipe("demo.yaml")) == []
