"""The search loop's pieces (positives, colours, crops) and a few real steps end to end."""

import json

import torch

from detection.demo import recipe_search as rs


def test_partner_is_a_render_of_the_same_scan():
    g = torch.Generator().manual_seed(0)
    n_scans, renders = 7, 4
    index = torch.arange(n_scans * renders).repeat(5)
    other = rs.partner(index, n_scans, renders, g)
    assert torch.equal(other % n_scans, index % n_scans)
    assert other.max() < n_scans * renders
    assert (other != index).float().mean() > 0.5  # mostly another render, not the same one


def test_colourise_puts_background_and_stroke_where_the_mask_says():
    alpha = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    alpha[:, :, 1:3, 1:3] = 255
    bg, fg = rs.random_colours(2, torch.Generator().manual_seed(1))
    out = rs.colourise(alpha, bg, fg)
    assert torch.equal(out[:, :, 0, 0], (bg.view(2, 3) * 255).round().to(torch.uint8))
    assert torch.equal(out[:, :, 1, 1], (fg.view(2, 3) * 255).round().to(torch.uint8))
    bg, fg = rs.random_colours(1000, torch.Generator().manual_seed(2))  # some drawn too close
    assert ((fg - bg).flatten(1).norm(dim=1) >= rs.MIN_CONTRAST).all()


def test_crop_affine_without_rotation_is_the_box():
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(1, 3, 1, 1)
    full = torch.tensor([[0.5, 0.5, 1.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    same = rs.crop_affine(images, full, torch.tensor([False]), 8, g)
    assert torch.equal(same, images)
    flipped = rs.crop_affine(images, full, torch.tensor([True]), 8, g)
    assert torch.equal(flipped, images.flip(-1))
    turned = rs.crop_affine(images, full, torch.tensor([False]), 8, g, rot_deg=30)
    assert not torch.equal(turned, images)


def test_a_few_steps_log_the_pretext_and_the_knn(tmp_path):
    out = tmp_path / "run.json"
    args = ["--steps", "3", "--knn-every", "3", "--limit", "60", "--K", "128"]
    args += ["--pair", "renders", "--style-per-scan", "--out", str(out)]
    record = rs.main(args)
    assert json.loads(out.read_text()) == record
    assert 0 <= record["random_knn"] <= 100 and 0 <= record["raw_pixel_knn"] <= 100
    knn = [e["knn"] for e in record["log"] if "knn" in e]
    steps = [e for e in record["log"] if "loss" in e]
    assert len(knn) == 1 and len(steps) == 1
    assert 0 < steps[0]["loss"] < 10  # InfoNCE over 1 + 128 logits: ln 129 = 4.9 at chance
