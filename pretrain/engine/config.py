"""Pretraining recipes: YAML files with ``_BASE_`` inheritance plus dotted overrides.

A config is a plain nested dict (it is stored as-is in every checkpoint). Every key
has a default in :data:`DEFAULTS`; a recipe only says what differs. Unknown keys and
bad values are errors that name the key and the allowed values.
"""

import copy
import difflib
import os

import yaml

DEFAULTS = {
    "model": {
        "arch": "resnet50",
        "dim": 128,  # feature dimension C of queries/keys
        "K": 65536,  # queue size (negatives)
        "m": 0.999,  # key encoder momentum
        "T": 0.07,  # softmax temperature
        "mlp": False,  # MoCo v2 MLP head
        "bn_splits": 1,  # >1: SplitBatchNorm groups (shuffling BN on one process)
        "shuffle": "auto",  # auto | ddp | single | off
        # random (the paper): K random unit vectors; keys: filled with real keys before the first
        # step (pretrain/model/queue_fill.py), a deviation for short runs such as the demo
        "queue_init": "random",
    },
    "data": {
        "aug": "v1",  # v1 | v2 ("aug+") | crop (crops and flips only: pretrain/data/augment.py)
        # false: no horizontal flips in the views (in_memory only), for data a mirror changes
        # (digits: a mirrored 3 is no digit). The papers flip.
        "hflip": True,
        "crop_size": 224,
        "crop_scale": [0.2, 1.0],  # RandomResizedCrop area range (the papers' value)
        "num_workers": 8,
        "kind": "auto",  # auto | folder | list (= filelist) | shards
        "samples_per_epoch": None,  # needed for shards (webdataset) without an index
        # reference: PIL + torchvision transforms in the workers (the paper's path).
        # fast: workers only decode + crop + flip to uint8; colour, blur and normalisation run
        # batched on the device (pretrain/data/device_augment.py): same distribution, far fewer CPU
        # cycles per image. auto: fast on CUDA, reference on CPU (the device part is slower there).
        "pipeline": "auto",
        # workers: the loader's workers decode (PIL, at reduced size when the crops allow).
        # device: workers only read bytes and draw crops; the training process decodes each batch
        # on its device (nvJPEG on a GPU; needs the fast pipeline, which auto then selects).
        "decode": "workers",
        # true: decode every image once into memory and augment each batch on tensors in the
        # training process (pretrain/data/memory.py): for small sets (the demo, CIFAR-sized);
        # no loader workers, data.pipeline/decode do not apply. memory_size: resize to S x S.
        "in_memory": False,
        "memory_size": None,
        # crops: MoCo's positives, two crops of one image. folder (in_memory only): the key view
        # is another image of the query image's folder, DATA/<instance>/<view>.jpg (multi-view
        # instances: renders or frames of one object; a deviation from the paper).
        "positives": "crops",
    },
    "optim": {
        "lr": 0.03,  # for a total batch of base_batch_size
        "base_batch_size": 256,  # lr scales linearly with batch_size x world_size / this
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "schedule": "step",  # step | cosine
        "milestones": [120, 160],  # epochs, for schedule=step
        "gamma": 0.1,
        "epochs": 200,
        "warmup_epochs": 0,  # linear warm-up (0 = none, as the papers)
    },
    "batch_size": 32,  # per process (the papers: 256 = 8 GPUs x 32)
    "amp": "auto",  # auto | off | bf16 | fp16 (CUDA only; auto = bf16 if supported else fp16)
    "channels_last": "auto",  # auto | true | false (CUDA only)
    "device": "auto",  # auto | cpu | cuda
    # torch.compile both encoders: false, true (inductor) or a backend name ("aot_eager", ...).
    # Pays a one-off compile (minutes for a ResNet on CPU) for faster steps; off by default.
    "compile": False,
    "checkpoint": {"every_iters": 1000, "keep_last": 3},
    "log": {"every_iters": 20, "tensorboard": True},
    "knn": {
        "every_epochs": 0,  # 0 = never; evaluates after these many epochs and at the end
        "path": None,  # labeled split: folder with train/ and val/ class folders
        "k": 200,
        "t": 0.1,
        "image_size": None,  # default: data.crop_size
        "batch_size": 256,
    },
    "seed": 0,
    "deterministic": False,
    # stop (with a checkpoint) after this many total iterations; schedule unchanged
    "max_iters": None,
}

CHOICES = {
    "model.shuffle": ("auto", "ddp", "single", "off"),
    "model.queue_init": ("random", "keys"),
    "data.aug": ("v1", "v2", "crop"),
    "data.pipeline": ("auto", "reference", "fast"),
    "data.decode": ("workers", "device"),
    "data.kind": ("auto", "folder", "list", "filelist", "shards"),
    "optim.schedule": ("step", "cosine"),
    "amp": ("auto", "off", "bf16", "fp16"),
    "channels_last": ("auto", True, False),
    "device": ("auto", "cpu", "cuda"),
}


class ConfigError(ValueError):
    pass


def merge(base: dict, update: dict, prefix="") -> dict:
    """Recursive merge; keys must exist in ``base`` (catches typos)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        name = prefix + key
        if key not in out:
            hint = difflib.get_close_matches(key, list(out), n=1)
            raise ConfigError(
                f"unknown config key {name!r}"
                + (
                    f"; did you mean {prefix + hint[0]!r}?"
                    if hint
                    else f"; known keys here: {sorted(out)}"
                )
            )
        if isinstance(out[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{name!r} is a section ({sorted(out[key])}), got {value!r}")
            out[key] = merge(out[key], value, name + ".")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _read_yaml(path, seen=()):
    path = os.path.abspath(path)
    if path in seen:
        raise ConfigError(f"_BASE_ cycle: {' -> '.join(seen + (path,))}")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"config file not found: {path!r} (recipes live in configs/pretrain/)"
        )
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path!r} must hold a mapping of config keys, got {type(data).__name__}")
    base = data.pop("_BASE_", None)
    if base is None:
        return data
    parent = _read_yaml(os.path.join(os.path.dirname(path), base), seen + (path,))
    return _deep_update(parent, data)


def _deep_update(a: dict, b: dict) -> dict:
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = (
            _deep_update(out[k], v)
            if isinstance(v, dict) and isinstance(out.get(k), dict)
            else copy.deepcopy(v)
        )
    return out


def parse_overrides(items) -> dict:
    """``["optim.lr=0.1", "model.mlp=true"]`` or ``["optim.lr", "0.1", ...]`` (--opts style) ->
    nested dict.

    Values are parsed as YAML: numbers, booleans, null and lists ([120,160]) work.
    """
    items = list(items or [])
    pairs = []
    i = 0
    while i < len(items):
        item = items[i]
        if "=" in item:
            key, value = item.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(items):
                raise ConfigError(f"override {item!r} has no value: write KEY=VALUE or KEY VALUE")
            key, value = item, items[i + 1]
            i += 2
        pairs.append((key.strip(), yaml.safe_load(value)))
    out = {}
    for key, value in pairs:
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_config(path=None, overrides=None) -> dict:
    """DEFAULTS <- YAML recipe (with its _BASE_ chain) <- overrides (dict or list of strings);
    validated.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        cfg = merge(cfg, _read_yaml(path))
    if overrides:
        cfg = merge(cfg, overrides if isinstance(overrides, dict) else parse_overrides(overrides))
    validate(cfg)
    return cfg


def _get(cfg, dotted):
    node = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def check_for_world(cfg: dict, world_size: int) -> None:
    """What only the launch decides: the total batch must fit the queue; DDP shuffling needs
    processes.
    """
    total = cfg["batch_size"] * world_size
    if total > cfg["model"]["K"]:
        raise ConfigError(
            f"batch_size {cfg['batch_size']} x {world_size} processes = {total} keys per step "
            f"> model.K {cfg['model']['K']}: raise model.K or lower batch_size"
        )
    if cfg["model"]["shuffle"] == "ddp" and world_size == 1:
        raise ConfigError(
            "model.shuffle=ddp shuffles the batch across processes, but this is one process: "
            "launch with torchrun, or use model.shuffle=auto (single + "
            "model.bn_splits > 1 on one process)"
        )


def resume_differences(saved: dict, cfg: dict, prefix="") -> list:
    """["key: saved -> now", ...] for the settings a resumed run changes (nested dicts
    flattened).
    """
    out = []
    for key in sorted(set(saved) | set(cfg)):
        a, b = saved.get(key), cfg.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += resume_differences(a, b, prefix + key + ".")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def validate(cfg: dict) -> None:
    cfg_check = merge(DEFAULTS, cfg)  # unknown keys
    for key, allowed in CHOICES.items():
        if _get(cfg_check, key) not in allowed:
            raise ConfigError(f"{key} must be one of {list(allowed)}, got {_get(cfg_check, key)!r}")
    positive = [
        "model.dim",
        "model.K",
        "model.T",
        "model.bn_splits",
        "optim.lr",
        "optim.epochs",
        "optim.base_batch_size",
        "batch_size",
        "data.crop_size",
        "checkpoint.every_iters",
        "checkpoint.keep_last",
        "log.every_iters",
    ]
    for key in positive:
        v = _get(cfg, key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{key} must be a positive number, got {v!r}")
    for key in [
        "optim.momentum",
        "optim.weight_decay",
        "optim.gamma",
        "optim.warmup_epochs",
        "seed",
    ]:
        v = _get(cfg, key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
            raise ConfigError(
                f"{key} must be a number >= 0, got {v!r} (YAML reads 1e-4 as text: write 1.0e-4)"
            )
    if not 0 <= cfg["model"]["m"] < 1:
        raise ConfigError(f"model.m must be in [0, 1), got {cfg['model']['m']!r}")
    if cfg["batch_size"] % cfg["model"]["bn_splits"]:
        raise ConfigError(
            f"batch_size {cfg['batch_size']} is not a multiple of "
            f"model.bn_splits {cfg['model']['bn_splits']}; "
            f"SplitBatchNorm needs equal groups"
        )
    if cfg["batch_size"] > cfg["model"]["K"]:
        raise ConfigError(
            f"batch_size {cfg['batch_size']} > model.K {cfg['model']['K']}: a "
            "step's keys must fit the queue"
        )
    if cfg["data"]["decode"] == "device" and cfg["data"]["pipeline"] == "reference":
        raise ConfigError(
            "data.decode=device needs the fast data pipeline: set data.pipeline to fast "
            "or auto (the reference pipeline decodes and augments with PIL in the workers)"
        )
    if cfg["data"]["positives"] not in ("crops", "folder"):
        raise ConfigError(
            f"data.positives must be crops or folder, got {cfg['data']['positives']!r}"
        )
    if cfg["data"]["positives"] == "folder" and not cfg["data"]["in_memory"]:
        raise ConfigError(
            "data.positives=folder (key views from other images of a folder) is implemented by "
            "the in-memory loader only: set data.in_memory=true or data.positives=crops"
        )
    if not isinstance(cfg["data"]["hflip"], bool):
        raise ConfigError(f"data.hflip must be true or false, got {cfg['data']['hflip']!r}")
    if not cfg["data"]["hflip"] and not cfg["data"]["in_memory"]:
        raise ConfigError(
            "data.hflip=false (views without horizontal flips) is implemented by the in-memory "
            "loader only: set data.in_memory=true or data.hflip=true"
        )
    if cfg["data"]["in_memory"] and cfg["data"]["decode"] == "device":
        raise ConfigError(
            "data.in_memory=true decodes every image once up front: data.decode=device "
            "does not apply; set data.decode=workers or data.in_memory=false"
        )
    if not isinstance(cfg["compile"], (bool, str)):
        raise ConfigError(
            f"compile must be true, false or a torch.compile backend name, got {cfg['compile']!r}"
        )
    if cfg["knn"]["every_epochs"] and not cfg["knn"]["path"]:
        raise ConfigError(
            "knn.every_epochs is set but knn.path is not: give a labeled "
            "folder with train/ and val/"
        )


def scaled_lr(cfg: dict, world_size: int) -> float:
    """Linear scaling rule: lr x total batch / base_batch_size (0.03 at 256, as the papers)."""
    o = cfg["optim"]
    return o["lr"] * cfg["batch_size"] * world_size / o["base_batch_size"]


def dump(cfg: dict) -> str:
    return yaml.safe_dump(cfg, sort_keys=False)
