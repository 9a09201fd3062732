"""The effective protocol on fewer (or more) processes than the paper's 8, and what every result
records about how it was made (detection.provenance), on our real task configs."""

import pytest

from detection import provenance
from detection.cli.train_net import cli
from detection.config_lookup import load_config
from detection.data.datasets import register_demo_datasets
from tests.detection.tiny_detection import write_tiny_c4_config


def _frozen(name="voc_R50_C4_moco", opts=()):
    cfg = load_config(name, list(opts))
    cfg.freeze()
    return cfg


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_the_papers_protocol_keeps_the_total_batch_on_any_world_size(world):
    cfg, line = provenance.apply_protocol(_frozen(), world)
    assert (cfg.SOLVER.IMS_PER_BATCH, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (16, 0.02, 24000)
    assert tuple(cfg.SOLVER.STEPS) == (18000, 22000) and cfg.MOCO.PROTOCOL == provenance.SAME_BATCH
    assert line.endswith(
        f"{world} process(es) x {16 // world} images = total batch 16, "
        f"BASE_LR 0.02, MAX_ITER 24000, STEPS (18000, 22000), WARMUP_ITERS 100"
    )
    assert "LINEAR" not in line and cfg.is_frozen()


def test_linear_scaling_is_detectron2s_rule_and_says_so():
    cfg, line = provenance.apply_protocol(_frozen(opts=["SOLVER.REFERENCE_WORLD_SIZE", "8"]), 2)
    s = cfg.SOLVER
    assert (s.IMS_PER_BATCH, s.BASE_LR, s.MAX_ITER, tuple(s.STEPS), s.WARMUP_ITERS) == (
        4,
        0.005,
        96000,
        (72000, 88000),
        400,
    )
    assert cfg.MOCO.PROTOCOL == "linear-scaled"
    assert line.startswith(
        "effective protocol: LINEAR-SCALED by Detectron2's "
        "SOLVER.REFERENCE_WORLD_SIZE rule from 8 to 2 processes (x0.25; not the "
        "paper's protocol, whose total batch is the config's 16)"
    )
    record = provenance.protocol_record(cfg, 2)
    assert (record["label"], record["ims_per_batch"], record["ims_per_process"]) == (
        "linear-scaled",
        4,
        2,
    )
    # Applying it again (the trainer's own auto_scale_workers) changes nothing.
    again, _ = provenance.apply_protocol(cfg, 2)
    assert again.SOLVER.IMS_PER_BATCH == 4 and again.SOLVER.MAX_ITER == 96000


def test_a_batch_that_cannot_be_split_is_a_one_line_error(tmp_path, tiny_demo_data, capsys):
    with pytest.raises(provenance.ProtocolError, match="16 cannot be split evenly over 3 process"):
        provenance.apply_protocol(_frozen(), 3)
    register_demo_datasets(tiny_demo_data["root"])
    rc = cli(
        [
            "--config",
            write_tiny_c4_config(tmp_path),
            "--num-gpus",
            "3",
            "OUTPUT_DIR",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("error: SOLVER.IMS_PER_BATCH 2 cannot be split evenly over 3 processes. Fix: ")
    )


def test_config_hash_ignores_locations_and_seed_not_settings():
    base = provenance.config_sha256(_frozen())
    same = _frozen(opts=["OUTPUT_DIR", "/elsewhere", "SEED", "3", "MODEL.WEIGHTS", "x.pkl"])
    assert provenance.config_sha256(same) == base
    assert provenance.config_sha256(_frozen(opts=["SOLVER.BASE_LR", "0.01"])) != base
    assert provenance.config_sha256(_frozen("voc0712_R50_C4_24k_moco")) == base  # the alias


def test_code_version_is_the_checkout_or_unknown(tmp_path, monkeypatch):
    version = provenance.code_version()
    assert len(version["commit"]) == 40 and isinstance(version["dirty"], bool)
    provenance.code_version.cache_clear()
    monkeypatch.setattr(provenance, "REPO", str(tmp_path))  # an installed copy: not a checkout
    try:
        assert provenance.code_version() == "unknown"
    finally:
        provenance.code_version.cache_clear()
