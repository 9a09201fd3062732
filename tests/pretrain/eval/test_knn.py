"""kNN monitor: exact on separable features, a percentage on a real (random) ResNet."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

from pretrain.data import build_labeled_loader
from pretrain.eval.knn import knn_evaluate, knn_predict, knn_scores, with_precise_bn
from tests.pretrain.eval.knn_by_hand import knn_top1_by_hand


def test_knn_is_right_on_well_separated_features():
    g = torch.Generator().manual_seed(0)
    centers = F.normalize(torch.randn(4, 16, generator=g), dim=1)
    labels = torch.arange(4).repeat_interleave(25)
    bank = F.normalize(centers[labels] + 0.05 * torch.randn(100, 16, generator=g), dim=1)
    query_labels = torch.tensor([3, 0, 2, 1, 1])
    queries = F.normalize(centers[query_labels] + 0.05 * torch.randn(5, 16, generator=g), dim=1)
    assert (
        knn_predict(queries, bank, labels, k=10, t=0.1, num_classes=4).tolist()
        == query_labels.tolist()
    )
    # k larger than the bank is capped; scores are the exp(sim/t)-weighted votes.
    scores = knn_scores(queries[:1], bank, labels, k=500, t=0.1, num_classes=4)
    expected = torch.zeros(4).scatter_add_(0, labels, ((queries[:1] @ bank.T)[0] / 0.1).exp())
    assert torch.allclose(scores[0], expected, rtol=1e-5)


def test_weighting_lets_close_neighbours_outvote_many_far_ones():
    bank = F.normalize(torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 2), dim=1)
    labels = torch.tensor([0, 1, 1])
    query = F.normalize(torch.tensor([[1.0, 0.1]]), dim=1)
    assert knn_predict(query, bank, labels, k=3, t=0.1).item() == 0


class MeanColour(nn.Module):
    """A "backbone" whose feature is the image's mean (normalised) colour: separable by hand."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 3)  # bypassed by knn_evaluate, like a ResNet's

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def _colour_folders(root):
    """red / green / blue: 6 train and 4 val images each; one val "green" image is really blue."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 4)):
        for name in ("blue", "green", "red"):
            os.makedirs(root / split / name)
            for i in range(n):
                channel = {"blue": 2, "green": 1, "red": 0}[name]
                if split == "val" and name == "green" and i == 0:
                    channel = 2  # mislabelled: its nearest neighbours are blue
                arr = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                arr[..., channel] += 180
                Image.fromarray(arr).save(root / split / name / f"{i}.png")
    return str(root / "train"), str(root / "val")


def test_knn_evaluate_end_to_end_on_separable_colours(tmp_path):
    train_path, val_path = _colour_folders(tmp_path)
    # 11 of the 12 val images are right (the mislabelled one is voted blue); answering class 0
    # (blue) everywhere would score 4/12, answering from the wrong images 0.
    top1 = knn_evaluate(MeanColour(), train_path, val_path, image_size=16, k=3, batch_size=5)
    assert top1 == pytest.approx(100.0 * 11 / 12)
    assert knn_top1_by_hand(
        MeanColour(), train_path, val_path, image_size=16, k=3
    ) == pytest.approx(top1)


def test_knn_evaluate_random_resnet18_on_demo_digits(tiny_demo_data):
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=7)
    model.train()
    fc = model.fc
    args = (tiny_demo_data["cls_train"], tiny_demo_data["cls_val"])
    top1 = knn_evaluate(model, *args, image_size=16, k=20, batch_size=100)
    assert top1 == pytest.approx(knn_top1_by_hand(model, *args, image_size=16, k=20))
    # The model is handed back as it came (fc and mode restored).
    assert model.fc is fc and model.training


def test_knn_evaluate_rejects_mismatched_classes(tmp_path, tiny_demo_data):
    other = tmp_path / "val" / "only_class"
    other.mkdir(parents=True)
    src = os.path.join(tiny_demo_data["cls_val"], sorted(os.listdir(tiny_demo_data["cls_val"]))[0])
    (other / "x.png").write_bytes(open(os.path.join(src, sorted(os.listdir(src))[0]), "rb").read())
    with pytest.raises(ValueError, match="same class folders"):
        knn_evaluate(
            torchvision.models.resnet18(),
            tiny_demo_data["cls_train"],
            str(tmp_path / "val"),
            image_size=32,
        )


def test_knn_cli_on_a_torchvision_checkpoint(tmp_path, tiny_demo_data, capsys):
    torch.manual_seed(0)
    ckpt = tmp_path / "tv.pth"
    torch.save(torchvision.models.resnet18().state_dict(), ckpt)
    from pretrain.cli import knn as cli

    top1 = cli.main(
        [
            "--checkpoint",
            str(ckpt),
            "--train",
            tiny_demo_data["cls_train"],
            "--val",
            tiny_demo_data["cls_val"],
            "--image-size",
            "16",
            "--k",
            "10",
            "--workers",
            "0",
        ]
    )
    assert f"top-1: {top1:.2f}%" in capsys.readouterr().out
    saved = torchvision.models.resnet18()
    saved.load_state_dict(torch.load(ckpt, weights_only=True))
    assert top1 == pytest.approx(
        knn_top1_by_hand(
            saved, tiny_demo_data["cls_train"], tiny_demo_data["cls_val"], image_size=16, k=10
        )
    )
    precise = cli.main(
        [
            "--checkpoint",
            str(ckpt),
            "--train",
            tiny_demo_data["cls_train"],
            "--val",
            tiny_demo_data["cls_val"],
            "--image-size",
            "16",
            "--k",
            "10",
            "--workers",
            "0",
            "--precise-bn",
        ]
    )
    assert f"top-1: {precise:.2f}%" in capsys.readouterr().out and precise != top1


def test_precise_bn_estimates_statistics_from_the_images_on_a_copy(tiny_demo_data):
    torch.manual_seed(0)
    model = torchvision.models.resnet18().eval()
    loader = build_labeled_loader(
        tiny_demo_data["cls_train"], image_size=16, batch_size=1000, train=False
    )
    images = torch.cat([x for x, _ in loader])
    assert len(loader) == 1  # one batch: fvcore's average of batch statistics is the exact mean
    with torch.no_grad():
        first = model.conv1(images)  # what the first BN sees
    precise = with_precise_bn(model, loader, torch.device("cpu"))
    assert not precise.training
    torch.testing.assert_close(
        precise.bn1.running_mean, first.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-5
    )
    torch.testing.assert_close(
        precise.bn1.running_var, first.var(dim=(0, 2, 3)), rtol=1e-3, atol=1e-5
    )
    # Deeper layers were estimated too, and the model handed in keeps its placeholders.
    assert precise.layer4[1].bn2.running_var.ne(1).all()
    assert model.bn1.running_mean.eq(0).all() and model.layer4[1].bn2.running_var.eq(1).all()


def test_knn_evaluate_with_precise_bn_leaves_the_model_alone(tiny_demo_data):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = (model, tiny_demo_data["cls_train"], tiny_demo_data["cls_val"])
    precise = knn_evaluate(*args, image_size=16, k=20, batch_size=64, precise_bn=True)
    placeholder = knn_evaluate(*args, image_size=16, k=20, batch_size=64)
    # Each figure is the kNN of its own network: placeholder statistics, or ones from the images.
    assert placeholder == pytest.approx(knn_top1_by_hand(model, *args[1:], image_size=16, k=20))
    loader = build_labeled_loader(args[1], image_size=16, batch_size=64, train=False)
    estimated = with_precise_bn(model, loader, torch.device("cpu"))
    assert precise == pytest.approx(knn_top1_by_hand(estimated, *args[1:], image_size=16, k=20))
    assert precise != placeholder
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
