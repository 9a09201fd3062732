"""Semantic segmentation of the MoCo paper ("FCN, R50 dilated"), on Detectron2's SemanticSegmentor.

The paper's appendix: R50 conv layers with the 3x3 convs of res5 dilated by 2 at stride 1
(output stride 16; Detectron2's ResNet builder does this with ``RESNETS.RES5_DILATION 2``),
then two 3x3 convs of 256 channels with dilation 6, BN and ReLU, and a 1x1 per-pixel
classifier. Detectron2 has no such head (``SemSegFPNHead`` has no dilation, the DeepLab
project's heads are ASPP), so ``FCNHead`` is registered here.

Also here:
* Pascal VOC 2012 segmentation datasets, which Detectron2 does not register:
  ``voc_2012_sem_seg_{train,val}`` (the official ``SegmentationClass`` palette PNGs) and
  ``voc_2012_sem_seg_train_aug`` (the 10582-image train_aug set with SBD, as the paper trains:
  ``SegmentationClassAug`` index PNGs + ``ImageSets/Segmentation/train_aug.txt``), under
  ``$DETECTRON2_DATASETS/VOC2012``.
* ``build_sem_seg_train_loader``: the paper's training augmentation (random scaling, THEN crop,
  flip; VOC scales by a random ratio of the image: ``RandomScaleRatio``), and labels read as
  class indices. Detectron2's default mapper crops before resizing and
  reads labels as grayscale, which turns VOC's palette PNGs into wrong class ids.
"""

import copy
import os

import fvcore.nn.weight_init as weight_init
import numpy as np
import torch
from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.layers import Conv2d, ShapeSpec, get_norm
from detectron2.modeling import SEM_SEG_HEADS_REGISTRY
from PIL import Image
from torch import nn
from torch.nn import functional as F

VOC_SEM_SEG_CLASSES = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_IGNORE_LABEL = 255  # object boundaries and "difficult" regions in VOC's label PNGs
# name -> (ImageSets/Segmentation list, label folder), all under <root>/VOC2012.
VOC_SEM_SEG_SPLITS = {
    "voc_2012_sem_seg_train": ("train", "SegmentationClass"),
    "voc_2012_sem_seg_val": ("val", "SegmentationClass"),
    "voc_2012_sem_seg_train_aug": ("train_aug", "SegmentationClassAug"),
}


@SEM_SEG_HEADS_REGISTRY.register()
class FCNHead(nn.Module):
    """``num_convs`` 3x3 convs (dilated, norm, ReLU) on one feature map, then a 1x1 classifier.

    Logits are upsampled by ``common_stride`` (the feature's stride) to the input resolution.
    """

    @configurable
    def __init__(
        self,
        input_shape: ShapeSpec,
        *,
        in_feature,
        num_classes,
        conv_dims,
        common_stride,
        norm="",
        num_convs=2,
        dilation=6,
        loss_weight=1.0,
        ignore_value=-1,
    ):
        super().__init__()
        self.in_feature = in_feature
        self.common_stride = common_stride
        self.loss_weight = loss_weight
        self.ignore_value = ignore_value
        layers = []
        in_channels = input_shape.channels
        for _ in range(num_convs):
            conv = Conv2d(
                in_channels,
                conv_dims,
                3,
                padding=dilation,
                dilation=dilation,
                bias=not norm,
                norm=get_norm(norm, conv_dims),
                activation=F.relu,
            )
            weight_init.c2_msra_fill(conv)
            layers.append(conv)
            in_channels = conv_dims
        self.convs = nn.Sequential(*layers)
        self.predictor = Conv2d(in_channels, num_classes, 1)
        nn.init.normal_(self.predictor.weight, 0, 0.001)
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        if len(in_features) != 1:
            raise ValueError(
                f"FCNHead reads one feature map, got MODEL.SEM_SEG_HEAD.IN_FEATURES={in_features}. "
                'Fix: e.g. IN_FEATURES ["res5"] with RESNETS.OUT_FEATURES ["res5"].'
            )
        shape = input_shape[in_features[0]]
        head = cfg.MODEL.SEM_SEG_HEAD
        if head.COMMON_STRIDE != shape.stride:
            raise ValueError(
                f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE={head.COMMON_STRIDE} but feature "
                f"{in_features[0]!r} has stride {shape.stride}. Fix: set "
                f"COMMON_STRIDE {shape.stride}."
            )
        return {
            "input_shape": shape,
            "in_feature": in_features[0],
            "num_classes": head.NUM_CLASSES,
            "conv_dims": head.CONVS_DIM,
            "common_stride": head.COMMON_STRIDE,
            "norm": head.NORM,
            "loss_weight": head.LOSS_WEIGHT,
            "ignore_value": head.IGNORE_VALUE,
        }

    def layers(self, features):
        return self.predictor(self.convs(features[self.in_feature]))

    def forward(self, features, targets=None):
        """Training: ``(None, {"loss_sem_seg": ...})``; inference: ``(N x C x H x W
        logits, {})``.
        """
        x = F.interpolate(
            self.layers(features),
            scale_factor=self.common_stride,
            mode="bilinear",
            align_corners=False,
        )
        if self.training:
            # The upsampled map covers ceil(H / stride) * stride pixels; the padded targets
            # cover H: crop exactly as sem_seg_postprocess does at inference.
            x = x[:, :, : targets.shape[-2], : targets.shape[-1]]
            loss = F.cross_entropy(x, targets, reduction="mean", ignore_index=self.ignore_value)
            return None, {"loss_sem_seg": loss * self.loss_weight}
        return x, {}


# ---------------------------------------------------------------------------------------------
# Pascal VOC 2012 segmentation


def load_voc_sem_seg(voc_dir, split, label_dir="SegmentationClass"):
    """Detectron2 dataset dicts (``file_name``, ``sem_seg_file_name``) of one VOC2012 split."""
    list_file = os.path.join(voc_dir, "ImageSets", "Segmentation", split + ".txt")
    if not os.path.isfile(list_file):
        how = (
            "the train_aug list (10582 ids: SBD train+val + VOC train, minus VOC val) and "
            "SegmentationClassAug label PNGs, e.g. from the DeepLab set-up instructions"
            if split == "train_aug"
            else "VOCtrainval_11-May-2012.tar from http://host.robots.ox.ac.uk/pascal/VOC/voc2012/"
        )
        raise FileNotFoundError(
            f"Pascal VOC segmentation split {split!r}: {list_file} not found.\n"
            f"  Fix: put {how} under {voc_dir} (set DETECTRON2_DATASETS to the "
            "folder holding VOC2012)."
        )
    with open(list_file) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    return [
        {
            "file_name": os.path.join(voc_dir, "JPEGImages", i + ".jpg"),
            "sem_seg_file_name": os.path.join(voc_dir, label_dir, i + ".png"),
        }
        for i in ids
    ]


def register_voc_sem_seg(root=None):
    """Register the ``voc_2012_sem_seg_*`` datasets under ``root`` (default: $DETECTRON2_DATASETS,
    else ./datasets, as Detectron2's builtins). Idempotent; another root re-registers them there.
    Returns the names."""
    root = os.path.expanduser(root or os.getenv("DETECTRON2_DATASETS", "datasets"))
    voc_dir = os.path.join(root, "VOC2012")
    for name, (split, label_dir) in VOC_SEM_SEG_SPLITS.items():
        sem_seg_root = os.path.join(voc_dir, label_dir)
        if name in DatasetCatalog.list():
            if MetadataCatalog.get(name).get("sem_seg_root") == sem_seg_root:
                continue
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
        DatasetCatalog.register(
            name, lambda d=voc_dir, s=split, lab=label_dir: load_voc_sem_seg(d, s, lab)
        )
        MetadataCatalog.get(name).set(
            stuff_classes=list(VOC_SEM_SEG_CLASSES),
            image_root=os.path.join(voc_dir, "JPEGImages"),
            sem_seg_root=sem_seg_root,
            evaluator_type="sem_seg",
            ignore_label=VOC_IGNORE_LABEL,
        )
    return list(VOC_SEM_SEG_SPLITS)


# ---------------------------------------------------------------------------------------------
# Training data


def read_label_png(path):
    """Class ids of a label PNG: palette PNGs (VOC) give their indices, grayscale ones
    their values.
    """
    with open(path, "rb") as f:
        img = Image.open(f)
        if img.mode not in ("P", "L", "I", "I;16"):
            raise ValueError(
                f"{path}: a label PNG must hold class ids (palette or grayscale), "
                f"got mode {img.mode}. "
                "Fix: use the dataset's label images (VOC SegmentationClass, "
                "Cityscapes *_labelTrainIds)."
            )
        return np.asarray(img, dtype=np.int64)


class RandomScaleRatio(T.Augmentation):
    """Resize the image (and its labels) by a ratio drawn uniformly from ``[min_ratio, max_ratio]``.

    The MoCo paper's VOC 2012 segmentation (appendix A.5) scales "each image by a random ratio in
    [0.5, 2.0]": relative to the image itself. Detectron2's ``ResizeShortestEdge`` draws an
    absolute short side, and ``ResizeScale`` a ratio of a fixed target size, so a 500x375 and a
    250x188 image would be scaled by different ratios.
    """

    def __init__(self, min_ratio, max_ratio, interp=Image.BILINEAR):
        super().__init__()
        if not 0 < min_ratio <= max_ratio:
            raise ValueError(
                f"RandomScaleRatio needs 0 < min_ratio <= max_ratio, got ({min_ratio}, "
                f"{max_ratio}). Fix: e.g. INPUT.SCALE_RATIO_TRAIN (0.5, 2.0)."
            )
        self._init(locals())

    def get_transform(self, image):
        h, w = image.shape[:2]
        ratio = np.random.uniform(self.min_ratio, self.max_ratio)
        new_h, new_w = max(1, int(round(h * ratio))), max(1, int(round(w * ratio)))
        # ResizeTransform resizes labels with nearest neighbour (apply_segmentation).
        return T.ResizeTransform(h, w, new_h, new_w, self.interp)


def sem_seg_train_augmentations(cfg):
    """Random scale, then crop, then flip.

    The scale is a ratio of the image (``RandomScaleRatio``) when ``INPUT.SCALE_RATIO_TRAIN`` is
    set (VOC 2012, as the paper), else an absolute short side (``ResizeShortestEdge`` over
    ``INPUT.MIN_SIZE_TRAIN``: Cityscapes' 512-2048, as the paper).
    """
    ratio = tuple(cfg.INPUT.get("SCALE_RATIO_TRAIN", ()))
    if ratio:
        if len(ratio) != 2:
            raise ValueError(
                f"INPUT.SCALE_RATIO_TRAIN must be (min, max), got {ratio}. "
                "Fix: e.g. INPUT.SCALE_RATIO_TRAIN (0.5, 2.0), or () for MIN_SIZE_TRAIN."
            )
        augs = [RandomScaleRatio(*ratio)]
    else:
        augs = [
            T.ResizeShortestEdge(
                cfg.INPUT.MIN_SIZE_TRAIN,
                cfg.INPUT.MAX_SIZE_TRAIN,
                cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING,
            )
        ]
    if cfg.INPUT.CROP.ENABLED:
        augs.append(T.RandomCrop(cfg.INPUT.CROP.TYPE, cfg.INPUT.CROP.SIZE))
    if cfg.INPUT.RANDOM_FLIP != "none":
        augs.append(
            T.RandomFlip(
                horizontal=cfg.INPUT.RANDOM_FLIP == "horizontal",
                vertical=cfg.INPUT.RANDOM_FLIP == "vertical",
            )
        )
    return augs


class SemSegDatasetMapper:
    """Dataset dict -> ``{"image", "sem_seg", ...}`` tensors for SemanticSegmentor training."""

    def __init__(self, cfg):
        self.augmentations = T.AugmentationList(sem_seg_train_augmentations(cfg))
        self.image_format = cfg.INPUT.FORMAT

    def __call__(self, dataset_dict):
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)  # also fills in height/width when missing
        sem_seg = read_label_png(dataset_dict.pop("sem_seg_file_name"))
        if sem_seg.shape != image.shape[:2]:
            raise ValueError(
                f"{dataset_dict['file_name']}: image is {image.shape[:2]} but its label PNG is "
                f"{sem_seg.shape}. Fix: the label must be the image's size (check "
                "the dataset files)."
            )
        # Detectron2 resizes uint8 labels with PIL (nearest); wider ids go through torch as float.
        sem_seg = (
            sem_seg.astype(np.uint8) if sem_seg.max(initial=0) < 256 else sem_seg.astype(np.float32)
        )
        aug_input = T.AugInput(image, sem_seg=sem_seg)
        self.augmentations(aug_input)
        dataset_dict["image"] = torch.as_tensor(
            np.ascontiguousarray(aug_input.image.transpose(2, 0, 1))
        )
        dataset_dict["sem_seg"] = torch.as_tensor(aug_input.sem_seg.astype("long"))
        return dataset_dict


def build_sem_seg_train_loader(cfg):
    """Detectron2's train loader with ``SemSegDatasetMapper`` (for SemanticSegmentor configs)."""
    return build_detection_train_loader(cfg, mapper=SemSegDatasetMapper(cfg))


register_voc_sem_seg()
