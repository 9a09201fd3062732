"""Dataset registration beyond Detectron2's builtins: the embedded digit scenes.

``detection/demo/data.py`` writes them; this names them for Detectron2 so a config can say
``DATASETS.TRAIN ("digits_voc_trainval",)``. The builtin datasets (VOC, COCO, LVIS,
Cityscapes) are registered by Detectron2 itself under ``$DETECTRON2_DATASETS``.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances, register_pascal_voc

from detection.demo.data import DIGIT_CLASSES

DEMO_DATA_ENV = "DEMO_DATA"
DEFAULT_DEMO_ROOT = "data"  # the Makefile's `make data` output


def demo_data_root(root=None):
    return os.path.abspath(
        os.path.expanduser(root or os.environ.get(DEMO_DATA_ENV) or DEFAULT_DEMO_ROOT)
    )


def _unregister(name):
    if name in DatasetCatalog.list():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _registered_at(name, key, value):
    return name in DatasetCatalog.list() and MetadataCatalog.get(name).get(key) == value


def register_demo_datasets(root=None):
    """Register ``digits_voc_{trainval,test}`` and ``digits_coco_{trainval,test}``.

    ``root`` (else ``$DEMO_DATA``, else ``./data``) holds ``VOCdigits/VOC2007`` (Pascal VOC
    layout) and ``digits_coco/annotations/instances_{split}.json`` (images in the VOC
    ``JPEGImages``). Idempotent; calling it with another root re-registers the names there.
    Files are read lazily, when a dataset is first used (``detection.checks`` reports missing ones).
    Returns the registered names.
    """
    root = demo_data_root(root)
    voc_dir = os.path.join(root, "VOCdigits", "VOC2007")
    image_root = os.path.join(voc_dir, "JPEGImages")
    names = []
    for split in ("trainval", "test"):
        name = f"digits_voc_{split}"
        if not _registered_at(name, "dirname", voc_dir):
            _unregister(name)
            register_pascal_voc(name, voc_dir, split, 2007, class_names=DIGIT_CLASSES)
            MetadataCatalog.get(name).set(evaluator_type="pascal_voc", demo_data_root=root)
        names.append(name)

        name = f"digits_coco_{split}"
        json_file = os.path.join(root, "digits_coco", "annotations", f"instances_{split}.json")
        if not _registered_at(name, "json_file", json_file):
            _unregister(name)
            # thing_classes come from the json's categories when it is loaded.
            register_coco_instances(name, {"demo_data_root": root}, json_file, image_root)
        names.append(name)
    return names
