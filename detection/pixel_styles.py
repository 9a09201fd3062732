"""Pixel conventions of the two kinds of ImageNet initialisation, in Detectron2's config keys.

Torchvision-style weights (MoCo, our converter, torchvision) see RGB input normalised with the
ImageNet mean/std (0-255 units) and stride in the 3x3 conv; MSRA Caffe2 pickles see BGR with the
mean subtracted only and stride in the 1x1 conv.
"""

TORCHVISION_PIXEL_MEAN = [123.675, 116.280, 103.530]
TORCHVISION_PIXEL_STD = [58.395, 57.120, 57.375]

TORCHVISION_STYLE = {
    "INPUT.FORMAT": "RGB",
    "MODEL.PIXEL_MEAN": TORCHVISION_PIXEL_MEAN,
    "MODEL.PIXEL_STD": TORCHVISION_PIXEL_STD,
    "MODEL.RESNETS.STRIDE_IN_1X1": False,
}
CAFFE_STYLE = {  # e.g. detectron2://ImageNetPretrained/MSRA/R-50.pkl
    "INPUT.FORMAT": "BGR",
    "MODEL.PIXEL_MEAN": [103.530, 116.280, 123.675],
    "MODEL.PIXEL_STD": [1.0, 1.0, 1.0],
    "MODEL.RESNETS.STRIDE_IN_1X1": True,
}
