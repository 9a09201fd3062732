"""Configs by name: ``load_config("voc0712_R50_C4_24k_moco")`` is what every entry point calls.

Detectron2's ``get_cfg()``, our keys, the YAML (with its ``_BASE_`` chain), then ``KEY VALUE``
overrides, exactly like Detectron2's ``tools/train_net.py`` setup. A bare name is looked up in
every folder of ``configs/``.
"""

import difflib
import os
from pathlib import Path

import yaml
from detectron2.config import get_cfg

from detection.config import add_moco_config

CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def _all_config_files():
    root = Path(CONFIG_DIR)
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*.yaml") if p.is_file())


def resolve_config_path(name_or_path):
    """A path to a YAML that exists, or a bare name looked up under ``configs/``.

    ``voc_R50_C4_24k_moco.yaml``, ``voc_R50_C4_24k_moco`` and ``pretrain/x.yaml`` all work.
    """
    name = os.fspath(name_or_path)
    if os.path.isfile(name):
        return os.path.abspath(name)
    candidates = [name] if name.endswith((".yaml", ".yml")) else [name + ".yaml", name]
    for cand in candidates:
        path = os.path.join(CONFIG_DIR, cand)
        if os.path.isfile(path):
            return path
    # A bare file name may live in a sub-folder of configs/.
    files = _all_config_files()
    base = os.path.basename(candidates[0])
    hits = [p for p in files if p.name == base]
    if len(hits) == 1:
        return str(hits[0])
    known = [str(p.relative_to(CONFIG_DIR)) for p in files]
    if len(hits) > 1:
        raise FileNotFoundError(
            f"config name {name!r} is ambiguous: "
            + ", ".join(str(p.relative_to(CONFIG_DIR)) for p in hits)
            + ". Fix: pass the path relative to configs/ or a full path."
        )
    stems = {k: k[: -len(".yaml")] for k in known}
    close = difflib.get_close_matches(candidates[0], known, n=5, cutoff=0.5)
    close += [
        k
        for k in difflib.get_close_matches(name, list(stems.values()), n=5, cutoff=0.5)
        if k + ".yaml" not in close
    ]
    hint = (
        ("did you mean: " + ", ".join(close))
        if close
        else (
            f"{len(known)} configs exist there"
            + (f", e.g. {', '.join(known[:5])}" if known else "")
        )
    )
    raise FileNotFoundError(
        f"config {name!r} not found: it is not a file, nor a name under {CONFIG_DIR}; {hint}.\n"
        f"  Fix: pass a YAML path, or one of the names in configs/ (ls {CONFIG_DIR})."
    )


def _yaml_chain(path, seen=None):
    """The file and its ``_BASE_`` files (Detectron2 resolves relative bases from the file)."""
    seen = set() if seen is None else seen
    path = os.path.abspath(path)
    if path in seen or not os.path.isfile(path):
        return []
    seen.add(path)
    with open(path) as f:
        text = f.read()
    chain = [(path, text)]
    base = (yaml.safe_load(text) or {}).get("_BASE_") if text.strip() else None
    if isinstance(base, str) and "://" not in base:
        if base.startswith("~"):
            base = os.path.expanduser(base)
        if not os.path.isabs(base):
            base = os.path.join(os.path.dirname(path), base)
        chain += _yaml_chain(base, seen)
    return chain


def uses_densepose(path):
    """True when the YAML (or one of its bases) is a DensePose config."""
    for p, text in _yaml_chain(path):
        if "densepose" in os.path.basename(p).lower() or "DENSEPOSE" in text:
            return True
    return False


def load_config(name_or_path, overrides=()):
    """``get_cfg()`` + our keys + the YAML + ``[KEY, VALUE, ...]`` overrides; not frozen."""
    path = resolve_config_path(name_or_path)
    cfg = get_cfg()
    add_moco_config(cfg)
    if uses_densepose(path):
        from detection.densepose import require_densepose

        require_densepose().add_densepose_config(cfg)
    cfg.merge_from_file(path)
    overrides = list(overrides or ())
    if len(overrides) % 2:
        raise ValueError(
            f"config overrides must be KEY VALUE pairs, got an odd number: {overrides}. "
            "Fix: e.g. SOLVER.MAX_ITER 100 OUTPUT_DIR out/run1"
        )
    cfg.merge_from_list(overrides)
    return cfg
