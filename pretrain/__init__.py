"""MoCo v1/v2 self-supervised pretraining (He et al. 2019, Chen et al. 2020).

The method: ``moco`` (MoCo model, Algorithm 1), ``queue`` (ring buffer of keys),
``momentum`` (key-encoder update), ``shuffle_bn`` / ``split_bn`` (shuffling BN across
processes / on one), ``backbone`` (torchvision ResNet). The loop: ``config`` (recipes),
``train`` (one function for one or many processes), ``distributed``, ``checkpoint``,
``progress`` (console, metrics.jsonl, TensorBoard, plots), ``slurm`` (submitit).
"""
