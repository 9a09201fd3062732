"""Our config keys on top of Detectron2's (``add_moco_config``), as Detectron2 projects do."""

from detectron2.config import CfgNode as CN


def add_moco_config(cfg):
    """Add this project's keys (with defaults) to a Detectron2 config, in place.

    Idempotent, so project code can call it on a cfg that may already have them.
    """
    if "MOCO" not in cfg:
        cfg.MOCO = CN()
        # Free text appended to "dataset not found" errors, e.g. where a cluster keeps
        # its copy ("on the cluster: DETECTRON2_DATASETS=/datasets01").
        cfg.MOCO.DATASET_ROOT_HINT = ""
        # Pre-flight checks (detection.checks) before training; off only for debugging.
        cfg.MOCO.RUN_CHECKS = True
        # Set by tools/train_net.py: the YAML this config was merged from (recorded in
        # eval_results.json's provenance; left out of the config hash, like OUTPUT_DIR).
        cfg.MOCO.CONFIG_FILE = ""
        # Set by tools/train_net.py (detection.provenance.apply_protocol): which protocol runs,
        # "same total batch as the config" or "linear-scaled" (SOLVER.REFERENCE_WORLD_SIZE).
        cfg.MOCO.PROTOCOL = ""
    if "NORM" not in cfg.MODEL.ROI_KEYPOINT_HEAD:
        # Detectron2's keypoint head has no norm option; "" keeps its behaviour.
        # Used by detection.modeling.keypoint_head.KRCNNConvDeconvUpsampleHeadNorm.
        cfg.MODEL.ROI_KEYPOINT_HEAD.NORM = ""
    if "DC5_NECK" not in cfg.MODEL:
        # The R50-dilated-C5 neck (detection.modeling.dc5_neck): a 3x3 conv with BN that reduces
        # res5 to 512 channels before RPN and the box head (MoCo paper, appendix A.1).
        cfg.MODEL.DC5_NECK = CN()
        cfg.MODEL.DC5_NECK.OUT_CHANNELS = 512
        cfg.MODEL.DC5_NECK.NORM = "BN"
    if "SCALE_RATIO_TRAIN" not in cfg.INPUT:
        # Semantic segmentation: scale each training image by a random ratio in (min, max) of its
        # own size (detection.modeling.semantic_seg.RandomScaleRatio); () = INPUT.MIN_SIZE_TRAIN.
        cfg.INPUT.SCALE_RATIO_TRAIN = ()
    return cfg
