"""Registered model parts: the C4 ROI head with the extra norm, keypoint head with norm, FCN head."""
