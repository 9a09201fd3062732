"""What this environment can run: Python, torch, devices, which Detectron2 and what it lacks.

``collect_env()`` returns plain data (JSON-serialisable); ``format_env()`` turns it into the
text ``tools/env_info.py`` prints (``main``). Detectron2's own ``collect_env_info`` does not say
which
*kind* of Detectron2 is installed (official compiled build or the pure-Python registry
package) nor which of our features that disables; this report does.
"""

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import sys

from detection.compiled_ops import compiled_ops
from detection.densepose import INSTALL_COMMAND as DENSEPOSE_INSTALL_COMMAND

REGISTRY_DISTRIBUTION = "sal-detectron2"

# What needs Detectron2's compiled extension ``detectron2._C``, and what happens without it.
C_OPS_FEATURES = (
    "fast COCO evaluation (COCOeval_opt): COCOEvaluator falls back to "
    "pycocotools' COCOeval (same numbers, slower)",
    "deformable convolution (DeformConv / ModulatedDeformConv, MODEL.RESNETS.DEFORM_ON_PER_STAGE)",
    "rotated boxes ops (nms_rotated, box_iou_rotated, ROIAlignRotated: RRPN / RROIHeads)",
)

# (label, distribution names to try in order) for the libraries our tasks use.
_PACKAGES = (
    ("fvcore", ("fvcore",)),
    ("iopath", ("iopath",)),
    ("pycocotools", ("pycocotools",)),
    ("lvis", ("lvis",)),
    ("cityscapesscripts", ("cityscapesScripts", "cityscapesscripts")),
    ("webdataset", ("webdataset",)),
    (
        "opencv",
        (
            "opencv-python-headless",
            "opencv-python",
            "opencv-contrib-python-headless",
            "opencv-contrib-python",
        ),
    ),
    ("numpy", ("numpy",)),
    ("pillow", ("pillow", "Pillow")),
)


def _dist_version(names):
    for name in names:
        try:
            return name, importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None, None


def _distribution_of(module):
    """Name of the installed distribution that provides top-level ``module``, or None."""
    names = importlib.metadata.packages_distributions().get(module, [])
    return sorted(set(names))[0] if names else None


def _cuda_info():
    import torch

    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {
        "cuda_available": available,
        "device_count": count,
        "devices": [torch.cuda.get_device_name(i) for i in range(count)],
        "torch_cuda_version": torch.version.cuda,
        "cudnn_version": cudnn,
    }


def _detectron2_info():
    spec = importlib.util.find_spec("detectron2")
    if spec is None:
        return {
            "installed": False,
            "variant": "not installed",
            "hint": "run `make setup` (it runs tools/install_detectron2.py)",
        }
    import detectron2

    info = {
        "installed": True,
        "version": getattr(detectron2, "__version__", None),
        "path": os.path.dirname(detectron2.__file__),
        "distribution": _distribution_of("detectron2"),
    }
    _C, error = compiled_ops()
    if _C is not None:
        info["compiled_ops"] = True
        info["compiled_ops_error"] = None
        info["variant"] = "official compiled"
        info["compiled_with_cuda"] = (
            _C.get_cuda_version() if hasattr(_C, "get_cuda_version") else None
        )
        info["disabled_features"] = []
    else:
        info["compiled_ops"] = False
        info["compiled_ops_error"] = error
        if info["distribution"] == REGISTRY_DISTRIBUTION:
            info["variant"] = f"pure Python (registry {REGISTRY_DISTRIBUTION})"
        else:
            info["variant"] = "pure Python (other)"
        info["disabled_features"] = list(C_OPS_FEATURES)
    return info


def detectron2_info():
    """Which Detectron2 (variant, version, compiled ops): also recorded with every result."""
    return _detectron2_info()


def _densepose_info():
    spec = importlib.util.find_spec("densepose")
    if spec is None:
        return {"installed": False, "install": DENSEPOSE_INSTALL_COMMAND}
    dist = _distribution_of("densepose")
    version = importlib.metadata.version(dist) if dist else None
    # A namespace package (e.g. the DensePose project folder on sys.path) has no origin file.
    path = (
        os.path.dirname(spec.origin)
        if spec.origin
        else next(iter(spec.submodule_search_locations or []), None)
    )
    return {"installed": True, "version": version, "path": path}


def collect_env():
    """Everything the report shows, as a JSON-serialisable dict."""
    import torch
    import torchvision

    packages = {}
    for label, names in _PACKAGES:
        dist, version = _dist_version(names)
        packages[label] = {"distribution": dist, "version": version}
    return {
        "python": {"version": platform.python_version(), "executable": sys.executable},
        "platform": platform.platform(),
        "torch": {"version": torch.__version__, "path": os.path.dirname(torch.__file__)},
        "torchvision": {"version": torchvision.__version__},
        "cuda": _cuda_info(),
        "cpu_threads": torch.get_num_threads(),
        "detectron2": _detectron2_info(),
        "densepose": _densepose_info(),
        "packages": packages,
    }


def format_env(d):
    """The report as aligned ``key: value`` lines, grouped by topic."""
    rows = []

    def add(key, value):
        rows.append((key, "-" if value is None else str(value)))

    add("python", f"{d['python']['version']} ({d['python']['executable']})")
    add("platform", d["platform"])
    add("torch", f"{d['torch']['version']} ({d['torch']['path']})")
    add("torchvision", d["torchvision"]["version"])
    cuda = d["cuda"]
    add("CUDA available", cuda["cuda_available"])
    add(
        "CUDA devices",
        f"{cuda['device_count']}" + (f": {', '.join(cuda['devices'])}" if cuda["devices"] else ""),
    )
    add("torch built for CUDA", cuda["torch_cuda_version"])
    add("cuDNN", cuda["cudnn_version"])
    add("CPU threads (torch)", d["cpu_threads"])

    d2 = d["detectron2"]
    add("detectron2 variant", d2["variant"])
    if d2["installed"]:
        add("detectron2 version", d2["version"])
        add("detectron2 path", d2["path"])
        add("detectron2 distribution", d2["distribution"])
        add(
            "detectron2._C ops",
            "available" if d2["compiled_ops"] else f"unavailable ({d2['compiled_ops_error']})",
        )
        for i, feature in enumerate(d2["disabled_features"]):
            add("disabled without _C" if i == 0 else "", feature)
    else:
        add("detectron2 install", d2["hint"])

    dp = d["densepose"]
    if dp["installed"]:
        add("densepose", f"{dp['version'] or 'installed'} ({dp['path']})")
    else:
        add("densepose", "not installed (optional; Detectron2's projects/DensePose)")
        add("densepose install", dp["install"])

    for label, info in d["packages"].items():
        version = info["version"]
        add(label, f"{version} ({info['distribution']})" if version else "not installed")

    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def main(argv=None):
    """``tools/env_info.py [--json]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    env = collect_env()
    print(json.dumps(env, indent=2, sort_keys=True) if args.json else format_env(env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
