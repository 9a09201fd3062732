"""Each source layout, written to disk as its tool writes it, converts to the right tensors."""

import hashlib
import pickle

import numpy as np
import pytest
import torch

from convert import AlreadyDetectron2Error, ConversionError, UnknownLayoutError, convert_checkpoint
from convert.mapping import map_backbone
from pretrain.weights.reader import extract_backbone
from pretrain.weights.safe_pickle import safe_pickle_load
from tests.convert.convert_layouts import backbone_state, mlp_head, mocov3_checkpoint, shifted


def _assert_holds(output, expected_state, target):
    """The output holds exactly ``expected_state`` (torchvision names) renamed for ``target``."""
    written = safe_pickle_load(output)
    expected = map_backbone(expected_state, target).tensors
    assert set(written["model"]) == set(expected)
    for name, tensor in expected.items():
        assert written["model"][name].dtype == np.float32 or not tensor.is_floating_point()
        np.testing.assert_array_equal(written["model"][name], tensor.numpy(), err_msg=name)
    return written


def test_moco_v2_checkpoint_keeps_query_encoder_and_lists_the_rest(
    r50, r50_converted, moco_r50_file
):
    written = _assert_holds(r50_converted["c4"].output_path, r50.state_dict(), "c4")
    assert written["__author__"] == "moco-transfer"
    assert written["matching_heuristics"] is False
    assert written["source"] == {
        "file": "moco_v2_r50.pth.tar",
        "sha256": hashlib.sha256(moco_r50_file.read_bytes()).hexdigest(),
        "format": "moco",
    }
    heuristic = _assert_holds(r50_converted["heuristic"].output_path, r50.state_dict(), "heuristic")
    assert heuristic["matching_heuristics"] is True


def test_moco_report_lists_key_encoder_queue_head_and_bn_counters(moco_r50_file, r50_converted):
    report = r50_converted["fpn"]
    state = torch.load(moco_r50_file, weights_only=True)["state_dict"]
    dropped = dict(report.dropped)
    # Every input tensor is either mapped or listed with a reason.
    assert set(dropped) | set(report.mapped) == set(state)
    assert not set(dropped) & set(report.mapped)
    assert all(
        "key (momentum) encoder" in dropped[n] for n in state if n.startswith("module.encoder_k.")
    )
    assert "queue" in dropped["module.queue"] and "queue" in dropped["module.queue_ptr"]
    assert "head" in dropped["module.encoder_q.fc.2.weight"]
    assert "BN step counter" in dropped["module.encoder_q.layer1.0.bn1.num_batches_tracked"]
    assert (
        report.mapped["module.encoder_q.layer1.0.downsample.1.running_var"]
        == "backbone.bottom_up.res2.0.shortcut.norm.running_var"
    )
    assert report.mapped_count == 265 and report.depth == 50 and report.source_format == "moco"
    assert "left out" in report.summary()


def test_moco_momentum_encoder_flag_takes_encoder_k(r18, tmp_path):
    q = backbone_state(r18)
    state = {"encoder_q." + k: v for k, v in q.items()}
    state.update({"encoder_k." + k: v for k, v in shifted(q, 1.0).items()})
    state["queue"] = torch.randn(16, 32)
    torch.save({"state_dict": state}, tmp_path / "ckpt.pth")
    convert_checkpoint(
        tmp_path / "ckpt.pth", tmp_path / "k.pkl", target="fpn", momentum_encoder=True
    )
    _assert_holds(tmp_path / "k.pkl", shifted(q, 1.0), "fpn")


def test_our_pretraining_checkpoint_converts(tmp_path):
    """A checkpoint written by pretrain.engine.checkpoint for a real
    pretrain.model.moco.MoCo model.
    """
    from pretrain.engine.checkpoint import get_rng_state, model_state_dict, save_checkpoint
    from pretrain.model.moco import MoCo

    model = MoCo(arch="resnet18", dim=16, K=32, mlp=True)
    with torch.no_grad():
        for p in model.encoder_k.parameters():
            p.add_(1.0)  # the key encoder must not be what we convert
    optimizer = torch.optim.SGD(model.encoder_q.parameters(), lr=0.03, momentum=0.9)
    path = save_checkpoint(
        {
            "epoch": 1,
            "iter": 0,
            "global_step": 10,
            "arch": "resnet18",
            "state_dict": model_state_dict(model),
            "optimizer": optimizer.state_dict(),
            "rng": get_rng_state(),
            "config": {"model": {"arch": "resnet18"}},
        },
        tmp_path / "run",
    )
    report = convert_checkpoint(path, tmp_path / "r18_fpn.pkl", target="fpn")
    assert report.source_format == "moco" and report.depth == 18
    _assert_holds(tmp_path / "r18_fpn.pkl", model.encoder_q.state_dict(), "fpn")


def test_mocov3_base_encoder_or_momentum_encoder(r50, tmp_path):
    torch.save(mocov3_checkpoint(r50, 2048), tmp_path / "v3.pth.tar")
    for momentum in (False, True):
        out = tmp_path / f"v3_{momentum}.pkl"
        report = convert_checkpoint(
            tmp_path / "v3.pth.tar", out, target="c4", momentum_encoder=momentum
        )
        expected = shifted(backbone_state(r50), -1.0) if momentum else backbone_state(r50)
        _assert_holds(out, expected, "c4")
        dropped = dict(report.dropped)
        assert report.source_format == "mocov3"
        assert "predictor" in dropped["module.predictor.0.weight"]
        assert "head" in dropped[f"module.{'momentum' if momentum else 'base'}_encoder.fc.0.weight"]
        other = "base" if momentum else "momentum"
        assert "encoder" in dropped[f"module.{other}_encoder.layer1.0.conv1.weight"]


@pytest.mark.parametrize("container", ["plain", "state_dict", "model", "ddp"])
def test_torchvision_supervised_state_dict(r50, r18, tmp_path, container):
    # The R50 case is the real supervised baseline; the containers only need a light ResNet.
    state = (r50 if container == "plain" else r18).state_dict()
    obj = {
        "plain": state,
        "state_dict": {"state_dict": state, "epoch": 90, "best_acc1": torch.tensor(76.1)},
        "model": {"model": state, "optimizer": {}, "args": {"lr": 0.1}},
        "ddp": {"state_dict": {"module." + k: v for k, v in state.items()}},
    }[container]
    torch.save(obj, tmp_path / "tv.pth")
    report = convert_checkpoint(tmp_path / "tv.pth", tmp_path / "tv.pkl", target="fpn")
    assert report.source_format == "torchvision"
    _assert_holds(tmp_path / "tv.pkl", state, "fpn")
    dropped = {
        name.removeprefix("module."): why for name, why in report.dropped
    }  # names as in the file
    assert "classifier/projection head" in dropped["fc.weight"]


def test_other_ssl_library_under_a_prefix(r18, tmp_path):
    state = {"backbone." + k: v for k, v in backbone_state(r18).items()}
    state.update(mlp_head("projector.", 512))
    state["momentum_backbone.conv1.weight"] = torch.zeros(64, 3, 7, 7)
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "solo.ckpt.pth")
    with pytest.raises(UnknownLayoutError) as err:
        convert_checkpoint(tmp_path / "solo.ckpt.pth", tmp_path / "x.pkl")
    assert "--prefix backbone." in str(err.value) and "projector.fc.*" in str(err.value)
    assert "encoder_q" in str(err.value)  # lists the layouts it knows
    report = convert_checkpoint(
        tmp_path / "solo.ckpt.pth", tmp_path / "solo.pkl", target="fpn", prefix="backbone."
    )
    assert report.source_format == "prefix:backbone."
    _assert_holds(tmp_path / "solo.pkl", backbone_state(r18), "fpn")
    assert dict(report.dropped)["projector.fc.0.weight"].startswith("outside")


def test_already_detectron2_weights_are_refused(r50_converted, r18, tmp_path):
    # Our own output (a {"model", "__author__"} pickle), and a Detectron2 training checkpoint.
    with pytest.raises(AlreadyDetectron2Error, match="needs? no conversion"):
        convert_checkpoint(r50_converted["c4"].output_path, tmp_path / "again.pkl")
    d2 = {
        "model": {
            "backbone.bottom_up.res2.0.conv1.weight": torch.zeros(64, 64, 1, 1),
            "backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7),
        },
        "iteration": 90000,
    }
    torch.save(d2, tmp_path / "model_final.pth")
    with pytest.raises(AlreadyDetectron2Error, match="MODEL.WEIGHTS"):
        convert_checkpoint(tmp_path / "model_final.pth", tmp_path / "again2.pkl")
    # Bare Detectron2 names in a plain numpy pickle (the heuristic form, no __author__).
    with open(tmp_path / "bare.pkl", "wb") as f:
        pickle.dump(
            {
                "stem.conv1.weight": np.zeros((64, 3, 7, 7), np.float32),
                "res2.0.conv1.weight": np.zeros((64, 64, 1, 1), np.float32),
            },
            f,
        )
    with pytest.raises(AlreadyDetectron2Error):
        convert_checkpoint(tmp_path / "bare.pkl", tmp_path / "again3.pkl", source="auto")
    assert not list(tmp_path.glob("again*"))


def test_unknown_layout_lists_found_and_known_prefixes(tmp_path):
    torch.save(
        {
            "state_dict": {
                "student.blocks.0.attn.qkv.weight": torch.zeros(3, 3),
                "student.blocks.0.mlp.fc1.weight": torch.zeros(3, 3),
                "teacher.head.weight": torch.zeros(3),
            }
        },
        tmp_path / "vit.pth",
    )
    with pytest.raises(UnknownLayoutError) as err:
        convert_checkpoint(tmp_path / "vit.pth", tmp_path / "out.pkl")
    message = str(err.value)
    assert "student.blocks.* (2)" in message and "teacher.head.* (1)" in message
    for known in ("encoder_q", "base_encoder", "conv1.weight", "backbone.res2"):
        assert known in message
    assert "--prefix" in message
    assert not (tmp_path / "out.pkl").exists()


def test_numpy_pickle_of_torchvision_weights_converts(r18, tmp_path):
    with open(tmp_path / "r18_numpy.pkl", "wb") as f:
        pickle.dump({"model": {k: v.numpy() for k, v in r18.state_dict().items()}}, f)
    report = convert_checkpoint(tmp_path / "r18_numpy.pkl", tmp_path / "out.pkl", target="fpn")
    assert report.source_format == "torchvision"
    _assert_holds(tmp_path / "out.pkl", r18.state_dict(), "fpn")


def test_forced_source_that_does_not_match_says_what_it_found(r18):
    moco = {"state_dict": {"module.encoder_q." + k: v for k, v in r18.state_dict().items()}}
    with pytest.raises(
        UnknownLayoutError, match=r"no tensors left .* mocov3 .*encoder_q\.conv1\.\* \(1\)"
    ):
        extract_backbone(moco, source="mocov3")
    with pytest.raises(AlreadyDetectron2Error):
        extract_backbone(moco, source="detectron2")
    with pytest.raises(ConversionError, match="--momentum-encoder applies to MoCo"):
        extract_backbone({"state_dict": r18.state_dict()}, momentum_encoder=True)
    with pytest.raises(ConversionError, match="--prefix only applies"):
        extract_backbone(moco, source="moco", prefix="module.")


def test_prefix_without_trailing_dot_is_completed(r18, tmp_path):
    state = {"backbone." + k: v for k, v in backbone_state(r18).items()}
    state.update(mlp_head("projector.", 512))
    torch.save({"state_dict": state}, tmp_path / "solo.pth")
    report = convert_checkpoint(
        tmp_path / "solo.pth", tmp_path / "solo.pkl", target="fpn", prefix="backbone"
    )
    assert report.source_format == "prefix:backbone."
    _assert_holds(tmp_path / "solo.pkl", backbone_state(r18), "fpn")


def test_dict_with_mixed_key_types_is_an_unknown_layout(tmp_path):
    torch.save({0: 1, "a": 2, 3.5: "x"}, tmp_path / "mixed.pth")
    with pytest.raises(UnknownLayoutError, match=r"top-level keys: \['a', 0, 3.5\]"):
        convert_checkpoint(tmp_path / "mixed.pth", tmp_path / "out.pkl")
    assert not (tmp_path / "out.pkl").exists()
