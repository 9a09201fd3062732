"""Detectron2 extension for the MoCo transfer benchmarks.

Importing it registers our parts (ROI heads, norm heads, the FCN semantic-segmentation head,
the digit demo and VOC semantic-segmentation datasets), the way Detectron2 projects do.
"""
from . import norm_heads, roi_heads, semantic_seg  # noqa: F401  (registration on import)
from .datasets import register_demo_datasets

# Like Detectron2's builtins, registered at import under $DEMO_DATA (default ./data);
# the files are read only when a dataset is used.
register_demo_datasets()
