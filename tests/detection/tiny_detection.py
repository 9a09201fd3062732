"""Tiny real Detectron2 runs for the detection tests: a C4 R50 MoCo-style config on the digit
scenes.

Imported by the test files of this folder (pytest puts the folder on sys.path).
"""

import os

from detectron2 import model_zoo

# The MoCo C4 recipe (Res5ROIHeadsExtraNorm, naiveSyncBN, nothing frozen, PreciseBN) on
# Detectron2's VOC C4 config, shrunk so that one iteration takes about a second on a CPU core.
TINY_C4_YAML = """\
_BASE_: "{base}"
MODEL:
  WEIGHTS: ""
  DEVICE: cpu
  BACKBONE:
    FREEZE_AT: 0
  RESNETS:
    NORM: naiveSyncBN
    STRIDE_IN_1X1: False
  ROI_HEADS:
    NAME: Res5ROIHeadsExtraNorm
    NUM_CLASSES: 10
    BATCH_SIZE_PER_IMAGE: 32
  RPN:
    PRE_NMS_TOPK_TRAIN: 200
    POST_NMS_TOPK_TRAIN: 64
    PRE_NMS_TOPK_TEST: 200
    POST_NMS_TOPK_TEST: 20
  ROI_BOX_HEAD:
    POOLER_RESOLUTION: 7  # res5 runs per region: 4x fewer FLOPs than 14
  PIXEL_MEAN: [123.675, 116.280, 103.530]
  PIXEL_STD: [58.395, 57.120, 57.375]
INPUT:
  FORMAT: RGB
  MIN_SIZE_TRAIN: (64,)
  MAX_SIZE_TRAIN: 128
  MIN_SIZE_TEST: 64
  MAX_SIZE_TEST: 128
DATASETS:
  TRAIN: ("digits_voc_trainval",)
  TEST: ("digits_voc_test",)
DATALOADER:
  NUM_WORKERS: 0
SOLVER:
  IMS_PER_BATCH: 2
  BASE_LR: 0.001
  MAX_ITER: 2
  STEPS: ()
  WARMUP_ITERS: 0
  CHECKPOINT_PERIOD: 1000
TEST:
  EVAL_PERIOD: 0
  DETECTIONS_PER_IMAGE: 20
  PRECISE_BN:
    ENABLED: True
    NUM_ITER: 1
"""


def write_tiny_c4_config(folder, name="tiny_voc_R50_C4_moco.yaml"):
    base = model_zoo.get_config_file("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml")
    path = os.path.join(os.fspath(folder), name)
    with open(path, "w") as f:
        f.write(TINY_C4_YAML.format(base=base))
    return path
