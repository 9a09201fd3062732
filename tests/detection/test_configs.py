"""Every Detectron2 config in configs/: its name, its ``_BASE_`` chain, its initialisation
conventions, and a real 2-iteration training + evaluation with ``detection.trainer.Trainer``
on a tiny copy of its dataset written in the dataset's real on-disk layout
(tests/detection/layouts.py).

Detectron2 registers its builtin datasets under ``$DETECTRON2_DATASETS`` once, at import; the
``datasets_root`` fixture points the variable at the tiny copies and re-registers the builtin
names there (restoring them afterwards), so every config runs in this process, unchanged except
for the tiny-run overrides below.
"""

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import builtin

import detection  # noqa: F401  (registers our heads)
from detection import checks
from detection.config_lookup import CONFIG_DIR, load_config, resolve_config_path
from detection.densepose import DensePoseMissingError
from detection.modeling import semantic_seg
from tests.detection import layouts

NAME_RE = re.compile(
    r"^(?P<task>(?P<dataset>voc0712|voc07|coco|cocokp|cocodp|lvis05|cityscapes|cityscapessem|voc12sem)"
    r"_(?P<arch>R50_C4|R50_DC5|R50_FPN|R50_dilated)"
    r"_(?P<schedule>\d+k|\d+x|s1x))"
    r"_(?P<init>moco|supervised_tv|supervised_frozenbn|supervised|random)\.yaml$"
)
# YAMLs in configs/ that are not experiment configs of this naming scheme.
NOT_TASK_CONFIG = re.compile(r"^(Base-.*|demo_.*)\.yaml$")
# Short names users type (the design brief's `--config voc_R50_C4_moco.yaml`): each is a file whose
# only key is `_BASE_`, naming the explicit config it stands for.
ALIASES = {
    f"voc_R50_C4_{init}.yaml": f"voc0712_R50_C4_24k_{init}.yaml"
    for init in ("moco", "supervised", "random", "supervised_tv")
}
# Task configs live in a folder per dataset and task, bases beside them (configs/pretrain/ holds
# pretraining recipes, not Detectron2 configs).
CONFIG_PATHS = {p.name: p for p in Path(CONFIG_DIR).rglob("*.yaml") if p.parent.name != "pretrain"}
ALL_YAMLS = sorted(CONFIG_PATHS)
TASK_CONFIGS = [n for n in ALL_YAMLS if NAME_RE.match(n)]
DENSEPOSE_CONFIGS = [n for n in TASK_CONFIGS if NAME_RE.match(n)["dataset"] == "cocodp"]
RUN_CONFIGS = [n for n in TASK_CONFIGS if n not in DENSEPOSE_CONFIGS]
FROZEN_BN_CONFIGS = [n for n in RUN_CONFIGS if n.endswith("_supervised_frozenbn.yaml")]

MSRA_WEIGHTS = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
SCHEDULE_ITERS = {"1x": 90000, "2x": 180000, "s1x": 130000}
INIT_KEYS = (
    "MODEL.WEIGHTS",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "INPUT.FORMAT",
    "MODEL.RESNETS.STRIDE_IN_1X1",
)
# Inits from the MSRA weights: the supervised baseline, and LVIS's with BN frozen (Table 6 dagger).
MSRA_INITS = ("supervised", "supervised_frozenbn")

# Small enough for a CPU: 64-128 px images, few proposals/ROIs, 2 iterations, no warm-up,
# one PreciseBN batch (kept on: the configs enable it), every detection scored (untrained
# heads give ~1/(K+1) scores, below the usual 0.05 threshold).
TINY_RUN = [
    "MODEL.DEVICE",
    "cpu",
    "MODEL.WEIGHTS",
    "",
    "INPUT.MIN_SIZE_TRAIN",
    "(64,)",
    "INPUT.MIN_SIZE_TRAIN_SAMPLING",
    "choice",
    "INPUT.MAX_SIZE_TRAIN",
    "128",
    "INPUT.CROP.SIZE",
    "(48, 64)",
    "SOLVER.IMS_PER_BATCH",
    "2",
    "SOLVER.MAX_ITER",
    "2",
    "SOLVER.STEPS",
    "(1,)",
    "SOLVER.WARMUP_ITERS",
    "0",
    "SOLVER.CHECKPOINT_PERIOD",
    "1000",
    "TEST.EVAL_PERIOD",
    "0",
    "TEST.PRECISE_BN.NUM_ITER",
    "1",
    "TEST.DETECTIONS_PER_IMAGE",
    "20",
    "DATALOADER.NUM_WORKERS",
    "0",
    "MODEL.RPN.PRE_NMS_TOPK_TRAIN",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TRAIN",
    "32",
    "MODEL.RPN.PRE_NMS_TOPK_TEST",
    "64",
    "MODEL.RPN.POST_NMS_TOPK_TEST",
    "16",
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE",
    "32",
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE",
    "16",
    "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
    "0.0",
    # Widths / 8: ResNet-50's depth, blocks, strides, dilations and norms, the heads' layers and
    # norms are the config's; only channel counts shrink, so that a CPU runs a config in seconds.
    "MODEL.RESNETS.STEM_OUT_CHANNELS",
    "8",
    "MODEL.RESNETS.RES2_OUT_CHANNELS",
    "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "8",
    "MODEL.FPN.OUT_CHANNELS",
    "32",
    "MODEL.ROI_BOX_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_BOX_HEAD.FC_DIM",
    "128",
    "MODEL.ROI_MASK_HEAD.CONV_DIM",
    "32",
    "MODEL.ROI_KEYPOINT_HEAD.CONV_DIMS",
    str((64,) * 8),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "32",
]
TINY_TEST_SIZE = ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "128"]

# evaluator_type -> {task: metrics that must come back as numbers}
EXPECTED_METRICS = {
    "pascal_voc": {"bbox": ("AP", "AP50", "AP75")},
    "coco": {"bbox": ("AP", "AP50", "AP75")},
    "lvis": {"bbox": ("AP", "AP50", "APr", "APc", "APf"), "segm": ("AP",)},
    "cityscapes_instance": {"segm": ("AP", "AP50")},
    "cityscapes_sem_seg": {"sem_seg": ("IoU", "iIoU", "IoU_sup", "iIoU_sup")},
    "sem_seg": {"sem_seg": ("mIoU", "fwIoU", "mACC", "pACC")},
}

# Name prefixes of the builtin datasets our configs use; re-registered under the tiny root.
BUILTIN_PREFIXES = ("coco_", "keypoints_coco_", "lvis_", "cityscapes_", "voc_")


def register_builtin_datasets(root):
    """Detectron2's builtin VOC/COCO/LVIS/Cityscapes names (and our VOC segmentation) under
    ``root``.
    """
    for name in list(DatasetCatalog.list()):
        if name.startswith(BUILTIN_PREFIXES):
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
    builtin.register_all_coco(root)
    builtin.register_all_lvis(root)
    builtin.register_all_cityscapes(root)
    builtin.register_all_cityscapes_panoptic(root)
    builtin.register_all_pascal_voc(root)
    semantic_seg.register_voc_sem_seg(root)


@pytest.fixture(scope="module")
def datasets_root(tmp_path_factory):
    root = layouts.write_all(tmp_path_factory.mktemp("detectron2_datasets"))
    old = os.environ.get("DETECTRON2_DATASETS")
    os.environ["DETECTRON2_DATASETS"] = root
    register_builtin_datasets(root)
    yield root
    if old is None:
        del os.environ["DETECTRON2_DATASETS"]
    else:
        os.environ["DETECTRON2_DATASETS"] = old
    register_builtin_datasets(os.path.expanduser(old or "datasets"))


def yaml_chain(name):
    """[(file name, parsed YAML)] from the config to its last ``_BASE_``."""
    chain, path = [], CONFIG_PATHS[name]
    while True:
        assert path.is_file(), f"{chain[-1][0] if chain else name}: _BASE_ {path} does not exist"
        data = yaml.safe_load(path.read_text()) or {}
        assert path.name not in [n for n, _ in chain], f"{name}: _BASE_ cycle at {path.name}"
        chain.append((path.name, data))
        if "_BASE_" not in data:
            return chain
        base = data["_BASE_"]
        assert not os.path.isabs(base) and "://" not in base, (
            f"{path.name}: _BASE_ must be relative"
        )
        path = (path.parent / base).resolve()


def cfg_value(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def flat(cfg, prefix=""):
    """{"A.B.C": value} of a CfgNode."""
    out = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def parsed(name):
    return NAME_RE.match(name).groupdict()


# ---------------------------------------------------------------------------------------------
# Names, inheritance, initialisation


def test_every_yaml_is_a_base_or_follows_the_naming_convention():
    bad = [
        n
        for n in ALL_YAMLS
        if not NAME_RE.match(n) and not NOT_TASK_CONFIG.match(n) and n not in ALIASES
    ]
    assert not bad, f"not <dataset>_<arch>_<schedule>_<init>.yaml (see README): {bad}"
    assert len(TASK_CONFIGS) >= 40


def test_every_task_has_each_init():
    tasks = {}
    for n in TASK_CONFIGS:
        tasks.setdefault(parsed(n)["task"], set()).add(parsed(n)["init"])
    assert set(tasks) == {  # the paper's transfer tasks (README, "Detectron2 configs")
        "voc0712_R50_C4_24k",
        "voc0712_R50_DC5_24k",
        "voc07_R50_C4_9k",
        "coco_R50_FPN_1x",
        "coco_R50_FPN_2x",
        "coco_R50_C4_1x",
        "coco_R50_C4_2x",
        "cocokp_R50_FPN_2x",
        "cocodp_R50_FPN_s1x",
        "lvis05_R50_FPN_1x",
        "cityscapes_R50_FPN_24k",
        "cityscapessem_R50_dilated_90k",
        "voc12sem_R50_dilated_30k",
    }, sorted(tasks)
    for task, inits in tasks.items():
        assert {"moco", "supervised", "random"} <= inits, task
    assert "supervised_tv" in tasks["voc0712_R50_C4_24k"]
    assert "supervised_tv" in tasks["coco_R50_FPN_1x"]
    assert "supervised_frozenbn" in tasks["lvis05_R50_FPN_1x"]  # the paper's supervised LVIS row


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_alias_is_only_a_base_and_equals_its_target(alias):
    assert alias in CONFIG_PATHS, f"alias {alias} missing from configs/"
    data = yaml.safe_load(CONFIG_PATHS[alias].read_text())
    assert data == {"_BASE_": ALIASES[alias]}, data  # one line: nothing may drift from the target
    assert NAME_RE.match(ALIASES[alias]) and ALIASES[alias] in CONFIG_PATHS
    assert CONFIG_PATHS[alias].parent == CONFIG_PATHS[ALIASES[alias]].parent
    assert flat(load_config(alias)) == flat(load_config(ALIASES[alias]))
    # The bare name a user types resolves to the alias, whose merged config is the target's.
    assert resolve_config_path(alias) == str(CONFIG_PATHS[alias])
    assert resolve_config_path(alias[: -len(".yaml")]) == str(CONFIG_PATHS[alias])


def test_alias_names_the_main_voc_benchmark():
    cfg = load_config("voc_R50_C4_moco.yaml")
    assert cfg.DATASETS.TRAIN == ("voc_2007_trainval", "voc_2012_trainval")
    assert cfg.DATASETS.TEST == ("voc_2007_test",)
    assert cfg.SOLVER.MAX_ITER == 24000 and cfg.MODEL.ROI_HEADS.NAME.startswith("Res5ROIHeads")


@pytest.mark.parametrize("name", TASK_CONFIGS)
def test_base_chain_resolves_to_one_of_our_bases(name):
    chain = yaml_chain(name)
    assert chain[-1][0].startswith("Base-"), [n for n, _ in chain]
    if name not in DENSEPOSE_CONFIGS:
        load_config(name)  # Detectron2 resolves the same chain (and rejects unknown keys)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_initialisation_conventions(name):
    cfg = load_config(name)
    init = parsed(name)["init"]
    if init in MSRA_INITS:
        assert cfg.MODEL.WEIGHTS == MSRA_WEIGHTS
        assert cfg.INPUT.FORMAT == "BGR"
        assert list(cfg.MODEL.PIXEL_MEAN) == [103.530, 116.280, 123.675]
        assert list(cfg.MODEL.PIXEL_STD) == [1.0, 1.0, 1.0]
        assert cfg.MODEL.RESNETS.STRIDE_IN_1X1 is True
    else:
        for key, value in checks.TORCHVISION_STYLE.items():
            assert cfg_value(cfg, key) == value, (key, cfg_value(cfg, key))
        if init == "random":
            assert cfg.MODEL.WEIGHTS == ""
        else:  # a placeholder the user must replace (detection.checks refuses to run it)
            assert cfg.MODEL.WEIGHTS.startswith("REPLACE_ME/"), cfg.MODEL.WEIGHTS
            with pytest.raises(checks.WeightsError, match="placeholder"):
                checks.check_weights_path(cfg.MODEL.WEIGHTS)
    if init in MSRA_INITS:
        # The project's own pre-flight check agrees (it judges MSRA weights by their URL).
        checks.check_pixel_format(cfg)


@pytest.mark.parametrize("name", FROZEN_BN_CONFIGS)
def test_frozen_bn_variant_differs_from_supervised_only_in_backbone_norm(name):
    task = parsed(name)["task"]
    this, other = flat(load_config(name)), flat(load_config(f"{task}_supervised"))
    assert {k for k in this if this[k] != other[k]} == {"MODEL.RESNETS.NORM"}
    assert this["MODEL.RESNETS.NORM"] == "FrozenBN" and this["MODEL.BACKBONE.FREEZE_AT"] == 0


@pytest.mark.parametrize("name", [n for n in RUN_CONFIGS if parsed(n)["init"] not in MSRA_INITS])
def test_inits_of_a_task_differ_only_in_initialisation(name):
    """MoCo vs supervised_tv vs random: only MODEL.WEIGHTS. Any of them vs supervised: only the
    init keys (weights + pixel format), i.e. the same fine-tuning recipe, as the paper compares."""
    task, init = parsed(name)["task"], parsed(name)["init"]
    this = flat(load_config(name))
    for other_init, allowed in (("moco", {"MODEL.WEIGHTS"}), ("supervised", set(INIT_KEYS))):
        other = flat(load_config(f"{task}_{other_init}"))
        differ = {k for k in this if this[k] != other[k]}
        assert differ <= allowed, f"{name} vs {task}_{other_init}: {sorted(differ - allowed)}"
    if init != "moco":
        assert this["MODEL.WEIGHTS"] != flat(load_config(f"{task}_moco"))["MODEL.WEIGHTS"]


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_schedule_in_the_name_is_the_schedule(name):
    cfg = load_config(name)
    schedule = parsed(name)["schedule"]
    iters = SCHEDULE_ITERS.get(schedule) or int(schedule[:-1]) * 1000
    assert cfg.SOLVER.MAX_ITER == iters
    assert all(0 < s < iters for s in cfg.SOLVER.STEPS) and list(cfg.SOLVER.STEPS) == sorted(
        cfg.SOLVER.STEPS
    )
    # What the paper changes from Detectron2's defaults, in every config (per-task values and
    # the one BN-frozen variant: tests/detection/test_protocols.py, detection/protocols.yaml).
    assert cfg.MODEL.BACKBONE.FREEZE_AT == 0
    assert cfg.TEST.PRECISE_BN.ENABLED


@pytest.mark.parametrize("name", DENSEPOSE_CONFIGS)
def test_densepose_configs(name):
    try:
        import densepose  # noqa: F401
    except ImportError:
        with pytest.raises(DensePoseMissingError, match="DensePose project"):
            load_config(name)
    else:
        from detection.trainer import Trainer

        cfg = load_config(name, ["MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", ""])
        assert cfg.MODEL.DENSEPOSE_ON
        Trainer.build_model(cfg)


# ---------------------------------------------------------------------------------------------
# Real runs


@pytest.mark.slow
@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_trains_and_evaluates_on_its_dataset_layout(
    name, datasets_root, one_thread, tmp_path, monkeypatch
):
    from detection.trainer import EVAL_RESULTS_FILE, Trainer

    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # nothing may be written where the user happens to be
    out = tmp_path / "out"
    overrides = TINY_RUN + ["OUTPUT_DIR", str(out)]
    cfg = load_config(name, overrides)
    if cfg.MODEL.META_ARCHITECTURE != "SemanticSegmentor":
        cfg.merge_from_list(TINY_TEST_SIZE)  # segmentation is evaluated at the image's own size
    # Every dataset the config names must be in place in its real layout.
    for dataset in list(cfg.DATASETS.TRAIN) + list(cfg.DATASETS.TEST):
        checks.check_dataset(dataset)
    cfg.freeze()
    try:
        trainer = Trainer(cfg)
        trainer.resume_or_load(resume=False)
        trainer.train()
        losses = trainer.storage.history("total_loss").values()
        assert len(losses) == cfg.SOLVER.MAX_ITER
        assert all(math.isfinite(v) for v, _ in losses), losses

        evaluator_type = MetadataCatalog.get(cfg.DATASETS.TEST[0]).evaluator_type
        expected = dict(EXPECTED_METRICS[evaluator_type])
        if evaluator_type == "coco":
            if cfg.MODEL.MASK_ON:
                expected["segm"] = ("AP",)
            if cfg.MODEL.KEYPOINT_ON:
                expected["keypoints"] = ("AP",)
        # detection.trainer writes the final evaluation as {dataset: {task: {metric: value}}}.
        with open(out / EVAL_RESULTS_FILE) as f:
            results = json.load(f)[cfg.DATASETS.TEST[0]]
        assert set(expected) <= set(results), (evaluator_type, results)
        for task, metrics in expected.items():
            for metric in metrics:
                value = results[task][metric]
                assert isinstance(value, float) and math.isfinite(value), (task, metric, value)
        assert os.listdir(tmp_path / "cwd") == []
    finally:
        shutil.rmtree(out, ignore_errors=True)  # model_final.pth is ~170 MB per config
