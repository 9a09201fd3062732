"""Image folders: ImageNet-style trees scanned recursively (labels optional)."""

import os

from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

HOW_TO_MAKE_DATA = (
    "Make one with `python tools/make_demo_data.py --out data` (tiny demo images), point to an "
    "ImageNet-style folder (ROOT/<class>/<image>.jpg; for pretraining any tree of images works), "
    "a text file listing one image path per line, or shards made by "
    "`python tools/make_shards.py SRC OUT`."
)


class DataPathError(FileNotFoundError):
    """The data path is missing, empty or not in a layout we read."""


def is_image_file(name):
    return name.lower().endswith(IMG_EXTENSIONS)


def scan_image_folder(root):
    """All image files under ``root`` (recursive, symlinks followed), sorted for reproducibility."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataPathError(f"image folder not found: {root!r}.\n  {HOW_TO_MAKE_DATA}")
    paths = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        paths.extend(os.path.join(folder, f) for f in sorted(files) if is_image_file(f))
    if not paths:
        raise DataPathError(
            f"no images ({', '.join(IMG_EXTENSIONS)}) found under {root!r}; expected "
            f"{root}/<class or any subfolder>/<image>.jpg.\n  {HOW_TO_MAKE_DATA}"
        )
    return paths


def scan_class_folders(root):
    """``([(path, class_index), ...], class_names)`` for ROOT/<class>/**/<image>."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DataPathError(
            f"labelled image folder not found: {root!r}; expected {root}/<class>/<image>.jpg "
            f"(e.g. DATA/train and DATA/val).\n  {HOW_TO_MAKE_DATA}"
        )
    try:
        classes, class_to_idx = find_classes(root)
        samples = make_dataset(root, class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except FileNotFoundError as e:
        raise DataPathError(
            f"{root!r} has no class subfolders; expected {root}/<class>/<image>.jpg.\n"
            f"  {HOW_TO_MAKE_DATA}"
        ) from e
    if not samples:
        raise DataPathError(
            f"no images found in the class folders of {root!r} ({', '.join(classes)}).\n"
            f"  {HOW_TO_MAKE_DATA}"
        )
    return samples, classes
