"""Pretraining data: folders, file lists and WebDataset shards, with robust image loading.

Entry points: :func:`build_pretrain_loader` (MoCo pairs) and :func:`build_labeled_loader`
(labelled images for the kNN monitor, the linear protocol and the supervised baseline).
"""

from pretrain.data.filelist import read_file_list
from pretrain.data.folder import DataPathError, scan_class_folders, scan_image_folder
from pretrain.data.loader import (
    PretrainLoader,
    build_labeled_loader,
    build_pretrain_loader,
    resolve_kind,
)
from pretrain.data.robust_image import UnreadableImageError, load_rgb
from pretrain.data.shards import expand_shard_urls

__all__ = [
    "build_pretrain_loader",
    "build_labeled_loader",
    "PretrainLoader",
    "resolve_kind",
    "scan_image_folder",
    "scan_class_folders",
    "read_file_list",
    "expand_shard_urls",
    "load_rgb",
    "UnreadableImageError",
    "DataPathError",
]
