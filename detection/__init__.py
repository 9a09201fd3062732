"""Detectron2 extension for the MoCo transfer benchmarks, shaped like a Detectron2 project.

Importing it registers our parts (ROI head with the extra norm, keypoint head with norm, the FCN
semantic-segmentation head, the R50-dilated-C5 backbone with its 512-channel neck) and the digit
demo datasets. Sub-packages: ``modeling`` (the parts),
``data`` (dataset registration), ``transfer`` (grids, results, tables), ``demo`` (``make demo``),
``cli`` (the command-line mains behind ``tools/``).
"""

import warnings

# Detectron2 scripts a few ops with torch.jit at import; torch 2.x warns about it on every run,
# which no user of ours can act on (and which would push our one-line errors off the screen).
warnings.filterwarnings(
    "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
)

from detection.data.datasets import register_demo_datasets  # noqa: E402
from detection.modeling import (  # noqa: E402, F401  (registration)
    dc5_neck,
    keypoint_head,
    roi_heads,
    semantic_seg,
)

# Like Detectron2's builtins, registered at import under $DEMO_DATA (default ./data);
# the files are read only when a dataset is used.
register_demo_datasets()
