"""Session fixtures: random R18/R50 weights, the official MoCo v2 checkpoint, its conversions."""

import pytest
import torch

from tests.convert.convert_layouts import moco_v2_checkpoint, random_resnet


@pytest.fixture(scope="session")
def r50():
    """A torchvision ResNet-50, random weights and BN statistics, eval mode."""
    return random_resnet("resnet50", seed=0)


@pytest.fixture(scope="session")
def r18():
    return random_resnet("resnet18", seed=1)


@pytest.fixture(scope="session")
def moco_r50_file(r50, tmp_path_factory):
    path = tmp_path_factory.mktemp("moco_r50") / "moco_v2_r50.pth.tar"
    # The released MoCo v1/v2 models predate torch's zip format: write the legacy one.
    torch.save(moco_v2_checkpoint(r50, 2048), path, _use_new_zipfile_serialization=False)
    return path


@pytest.fixture(scope="session")
def r50_converted(moco_r50_file, tmp_path_factory):
    """The MoCo R50 checkpoint converted to each target: {target: ConversionReport}."""
    from convert import convert_checkpoint

    out = tmp_path_factory.mktemp("r50_converted")
    return {
        t: convert_checkpoint(moco_r50_file, out / f"r50_{t}.pkl", target=t)
        for t in ("c4", "fpn", "heuristic")
    }
