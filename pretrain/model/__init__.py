"""The method: MoCo (``moco.py``, read it beside the paper's Algorithm 1) and its parts."""

from pretrain.model.moco import MoCo, contrast_stats, info_nce_loss

__all__ = ["MoCo", "contrast_stats", "info_nce_loss"]
