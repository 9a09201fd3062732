"""Every task config against detection/protocols.yaml: the paper's protocol cannot drift silently.

Each config is read as Detectron2 reads it (``detection.config_lookup.load_config``: defaults, our
keys, the ``_BASE_`` chain). DensePose configs need the DensePose project for its keys; without
it they are merged the same way with unknown keys allowed, and that path is itself checked
against ``load_config`` on a config both can read.
"""

import math
from pathlib import Path

import pytest
import yaml
from detectron2.config import get_cfg

import detection
from detection.config import add_moco_config
from detection.config_lookup import load_config, resolve_config_path
from tests.detection.test_configs import DENSEPOSE_CONFIGS, TASK_CONFIGS, cfg_value, parsed

PROTOCOLS_FILE = Path(detection.__file__).parent / "protocols.yaml"
PROTOCOLS = yaml.safe_load(PROTOCOLS_FILE.read_text())


def densepose_installed():
    try:
        import densepose  # noqa: F401
    except ImportError:
        return False
    return True


def merged_config(name):
    """The config as Detectron2 merges it; DensePose's own keys accepted without the project."""
    if name not in DENSEPOSE_CONFIGS or densepose_installed():
        return load_config(name)
    cfg = get_cfg()
    add_moco_config(cfg)
    cfg.set_new_allowed(True)  # MODEL.DENSEPOSE_ON, ROI_DENSEPOSE_HEAD.* are DensePose's keys
    cfg.merge_from_file(resolve_config_path(name))
    return cfg


def expected_keys(name):
    """{key: (value, source)} of the protocol this config must follow."""
    task, init = parsed(name)["task"], parsed(name)["init"]
    protocol = PROTOCOLS["tasks"][task]
    layers = [PROTOCOLS["common"], protocol] + (
        [protocol["variants"][init]] if init in protocol.get("variants", {}) else []
    )
    out = {}
    for layer in layers:
        out.update({k: (v, layer["source"]) for k, v in layer["keys"].items()})
    return out


def same(got, want):
    if isinstance(want, list):
        return (
            isinstance(got, (list, tuple))
            and len(got) == len(want)
            and all(same(g, w) for g, w in zip(got, want))
        )
    if isinstance(want, float) and not isinstance(want, bool):
        return (
            isinstance(got, (int, float)) and not isinstance(got, bool) and math.isclose(got, want)
        )
    return type(got) is type(want) and got == want


def test_every_protocol_has_a_source_and_every_task_a_protocol():
    assert PROTOCOLS["common"]["source"].strip()
    tasks = {parsed(n)["task"] for n in TASK_CONFIGS}
    assert tasks == set(PROTOCOLS["tasks"]), sorted(tasks ^ set(PROTOCOLS["tasks"]))
    for task, protocol in PROTOCOLS["tasks"].items():
        assert protocol["source"].strip() and protocol["keys"], task
        for init, variant in protocol.get("variants", {}).items():
            assert variant["source"].strip() and variant["keys"], (task, init)
            configs = [n for n in TASK_CONFIGS if parsed(n)["task"] == task]
            assert any(parsed(n)["init"] == init for n in configs), f"{task}: no {init} config"


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_config_follows_its_protocol(name):
    cfg = merged_config(name)
    wrong = []
    for key, (want, source) in expected_keys(name).items():
        got = cfg_value(cfg, key)
        if not same(got, want):
            wrong.append(
                f"{key}: config has {got!r}, the protocol says {want!r} ({source.strip()[:80]})"
            )
    assert not wrong, f"{name} differs from detection/protocols.yaml:\n  " + "\n  ".join(wrong)


def test_fallback_merge_equals_detectron2s_on_a_plain_config():
    name = "lvis05_R50_FPN_1x_moco"
    cfg = get_cfg()
    add_moco_config(cfg)
    cfg.set_new_allowed(True)
    cfg.merge_from_file(resolve_config_path(name))
    assert cfg == load_config(name)
