"""Evaluation of pretrained backbones: kNN monitor, linear protocol, supervised baseline."""
