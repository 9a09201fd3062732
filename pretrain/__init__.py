"""MoCo v1/v2 self-supervised pretraining (He et al. 2019, Chen et al. 2020).

- ``model``: the method: ``moco`` (Algorithm 1: encoders, queue, InfoNCE), queue, momentum update,
  shuffling/split BN, the ResNet encoder;
- ``data``: sources (folders, file lists, shards), samplers, loaders and every augmentation path;
- ``engine``: the training loop, recipes, checkpoints, progress, SLURM submission;
- ``eval``: kNN monitor, linear protocol, supervised baseline;
- ``weights``: the one reader of pretraining checkpoints (ours and other codebases'), safe loading;
- ``benchmark``: speed of the data path and step against the reference implementation;
- ``cli``: the command-line mains behind ``tools/``; ``io``, ``distributed``: shared helpers.
Importing it does not import Detectron2.
"""
