"""MoCo v1/v2 self-supervised pretraining (He et al. 2019, Chen et al. 2020)."""
