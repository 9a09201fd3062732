"""Pretraining checkpoints (MoCo v1/v2/v3, torchvision, other SSL libraries) -> Detectron2 weights.

``convert_checkpoint`` reads a file safely, extracts the ResNet, renames every tensor
to Detectron2's names for the chosen target and writes a model-zoo pickle;
``detection.verify`` proves the result loads into a Detectron2 model and computes
the same features. Importing this package does not import Detectron2.
"""

from convert.conversion import ConversionReport, convert_checkpoint
from convert.mapping import MappingError
from convert.writer import OutputExistsError
from pretrain.weights.reader import AlreadyDetectron2Error, ConversionError, UnknownLayoutError

__all__ = [
    "AlreadyDetectron2Error",
    "ConversionError",
    "ConversionReport",
    "MappingError",
    "OutputExistsError",
    "UnknownLayoutError",
    "convert_checkpoint",
]
