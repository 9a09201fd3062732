"""Registered model parts: the C4 ROI head with the extra norm, keypoint head with norm, FCN head,
the R50-dilated-C5 backbone with its 512-channel neck."""
