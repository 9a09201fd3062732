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
    return cfg
