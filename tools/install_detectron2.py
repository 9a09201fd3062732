#!/usr/bin/env python
"""Install Detectron2 into the running interpreter's environment.

Detectron2 has no official release on PyPI. Order of preference:
1. an official, compiled Detectron2 that is already importable (its ``_C`` loads): keep it;
2. otherwise the registry package ``sal-detectron2==0.7.2``, which carries Detectron2's
   Python sources (a 2024 snapshot of upstream). Its wheel is tagged ``cp310`` only and
   its compiled ``_C`` cannot load on other Pythons, so we download the 3.10 wheel,
   drop the unusable ``_C`` binary and re-tag the wheel ``py3-none-any`` before
   installing it. Detectron2 falls back to pure PyTorch for everything our tasks need.

Idempotent: a second run finds the installed copy and does nothing.
"""

import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

PACKAGE = "sal-detectron2"
VERSION = "0.7.2"


def installed_variant():
    """Return "official", "registry" or None for the Detectron2 importable now."""
    if importlib.util.find_spec("detectron2") is None:
        return None
    probe = "from detectron2 import _C"
    compiled = subprocess.run([sys.executable, "-c", probe], capture_output=True).returncode == 0
    if compiled:
        return "official"
    show = subprocess.run(
        [sys.executable, "-m", "pip", "show", PACKAGE], capture_output=True, text=True
    )
    return "registry" if f"Version: {VERSION}" in show.stdout else "other"


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def retag_pure(src, dst_dir):
    """Rewrite the cp310 wheel as py3-none-any without the compiled extension."""
    name = f"sal_detectron2-{VERSION}-py3-none-any.whl"
    dst = os.path.join(dst_dir, name)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as zout:
        record_name = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        records = []
        for item in zin.infolist():
            if item.filename == record_name or item.filename.endswith(".so"):
                continue
            data = zin.read(item.filename)
            if item.filename.endswith(".dist-info/WHEEL"):
                text = data.decode().replace("Root-Is-Purelib: false", "Root-Is-Purelib: true")
                text = (
                    "\n".join(
                        "Tag: py3-none-any" if line.startswith("Tag:") else line
                        for line in text.splitlines()
                    )
                    + "\n"
                )
                data = text.encode()
            zout.writestr(item.filename, data)
            records.append(_record_line(item.filename, data))
        records.append(f"{record_name},,")
        zout.writestr(record_name, "\n".join(records) + "\n")
    return dst


def pip(*args):
    cmd = [sys.executable, "-m", "pip", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.check_call(cmd)


def main():
    variant = installed_variant()
    if variant == "official":
        print("Detectron2: an official compiled build is installed; keeping it.")
        return
    if variant == "registry":
        print(f"Detectron2: {PACKAGE}=={VERSION} (pure Python) already installed.")
        return
    if variant == "other":
        print("Detectron2: a non-compiled Detectron2 of another origin is installed; keeping it.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        pip(
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.10",
            "-d",
            tmp,
            f"{PACKAGE}=={VERSION}",
        )
        wheel = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
        pure = retag_pure(wheel, tmp)
        # Its dependencies are declared (with working ranges) in our pyproject.toml.
        pip("install", "--no-deps", pure)
    print(f"Detectron2: installed {PACKAGE}=={VERSION} as pure Python (no _C).")


if __name__ == "__main__":
    main()
