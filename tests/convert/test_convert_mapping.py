"""torchvision -> Detectron2 names: exact names per target, both block types, nothing lost."""

import pytest
import torch
import torchvision

from convert.mapping import MappingError, map_backbone, resnet_arch


def _meta_state(arch):
    # Shapes without memory: enough for names and architecture detection.
    with torch.device("meta"):
        return torchvision.models.get_model(arch, weights=None).state_dict()


def test_c4_target_has_detectron2_r50_c4_names(r50):
    state = r50.state_dict()
    mapped = map_backbone(state, "c4")
    names = set(mapped.tensors)
    for expected in [
        "backbone.stem.conv1.weight",
        "backbone.stem.conv1.norm.weight",
        "backbone.stem.conv1.norm.bias",
        "backbone.stem.conv1.norm.running_mean",
        "backbone.stem.conv1.norm.running_var",
        "backbone.res2.0.conv1.weight",
        "backbone.res2.0.shortcut.weight",
        "backbone.res2.0.shortcut.norm.running_var",
        "backbone.res3.3.conv3.norm.bias",
        "backbone.res4.5.conv2.norm.running_mean",
        "roi_heads.res5.0.shortcut.norm.weight",
        "roi_heads.res5.2.conv3.weight",
    ]:
        assert expected in names, expected
    assert not any(n.startswith("backbone.res5") for n in names)
    assert len([n for n in names if n.startswith("roi_heads.res5.")]) == 3 * 3 * 5 + 5
    # Everything but the 53 BN counters and the classifier is converted, values untouched.
    assert len(names) == len(state) - 53 - 2
    assert torch.equal(
        mapped.tensors["backbone.res4.5.conv2.norm.running_mean"],
        state["layer3.5.bn2.running_mean"],
    )
    assert torch.equal(
        mapped.tensors["roi_heads.res5.0.shortcut.weight"], state["layer4.0.downsample.0.weight"]
    )
    reasons = dict(mapped.dropped)
    assert set(reasons) == {n for n in state if n.endswith("num_batches_tracked")} | {
        "fc.weight",
        "fc.bias",
    }


def test_fpn_dc5_and_heuristic_targets_differ_only_by_prefix(r50):
    state = r50.state_dict()
    fpn = map_backbone(state, "fpn").renames
    heuristic = map_backbone(state, "heuristic").renames
    assert fpn["layer4.2.bn3.weight"] == "backbone.bottom_up.res5.2.conv3.norm.weight"
    assert heuristic["layer4.2.bn3.weight"] == "res5.2.conv3.norm.weight"
    assert heuristic["conv1.weight"] == "stem.conv1.weight"
    assert {k: "backbone.bottom_up." + v for k, v in heuristic.items()} == fpn
    dc5 = map_backbone(state, "dc5").renames  # whole ResNet in backbone., res5 included
    assert {k: "backbone." + v for k, v in heuristic.items()} == dc5


def test_basic_blocks_of_resnet18_map_to_conv1_conv2_shortcut(r18):
    mapped = map_backbone(r18.state_dict(), "fpn")
    names = set(mapped.tensors)
    assert "backbone.bottom_up.res3.0.conv2.norm.running_var" in names
    assert "backbone.bottom_up.res3.0.shortcut.weight" in names
    assert "backbone.bottom_up.res2.0.shortcut.weight" not in names  # 64 -> 64: identity
    assert not any(".conv3." in n for n in names)
    assert mapped.arch.depth == 18 and mapped.arch.block == "basic"


def test_c4_target_refuses_basic_blocks_with_the_fix(r18):
    with pytest.raises(MappingError, match="--target fpn"):
        map_backbone(r18.state_dict(), "c4")


@pytest.mark.parametrize(
    "arch,depth,block",
    [
        ("resnet18", 18, "basic"),
        ("resnet34", 34, "basic"),
        ("resnet50", 50, "bottleneck"),
        ("resnet101", 101, "bottleneck"),
        ("resnext50_32x4d", 50, "bottleneck"),
    ],
)
def test_architecture_is_read_from_the_keys(arch, depth, block):
    found = resnet_arch(_meta_state(arch))
    assert (found.depth, found.block) == (depth, block)
    if arch.startswith("resnext"):
        assert (found.groups, found.bottleneck_channels) == (32, 128)


def test_r101_c4_puts_its_23_res4_blocks_in_the_backbone():
    mapped = map_backbone(_meta_state("resnet101"), "c4")
    assert "backbone.res4.22.conv3.weight" in mapped.tensors
    assert "roi_heads.res5.2.conv3.weight" in mapped.tensors


def test_a_tensor_that_is_not_resnet_is_an_error_not_dropped(r18):
    state = dict(r18.state_dict())
    state["layer2.0.se.fc1.weight"] = torch.zeros(8, 128)
    with pytest.raises(MappingError, match=r"layer2\.0\.se\.fc1\.weight"):
        map_backbone(state, "fpn")


def test_weights_without_four_stages_are_refused(r18):
    state = {k: v for k, v in r18.state_dict().items() if not k.startswith("layer4.")}
    with pytest.raises(MappingError, match="four stages"):
        map_backbone(state, "fpn")
