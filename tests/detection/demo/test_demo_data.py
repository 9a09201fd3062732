"""The demo data loads with the real readers (Detectron2, pycocotools, torchvision) and is
reproducible.
"""

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from detection.demo.data import DIGIT_CLASSES, INCOMPLETE_MARKER, DemoDataError, make_demo_data
from tests.paths import REPO

# Smaller than the session fixture: these tests generate several copies.
MINI = dict(limit=60, n_det_trainval=3, n_det_test=2, verbose=False)


def _file_hashes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _manifest(paths):
    with open(paths["manifest"]) as f:
        return json.load(f)


def test_classification_folders_are_imagenet_layout_and_stratified(tiny_demo_data):
    from torchvision.datasets import ImageFolder

    counts = _manifest(tiny_demo_data)["counts"]
    train, val = ImageFolder(tiny_demo_data["cls_train"]), ImageFolder(tiny_demo_data["cls_val"])
    assert sorted(train.classes) == sorted(DIGIT_CLASSES) == sorted(val.classes)
    assert (len(train), len(val)) == (counts["cls_train"], counts["cls_val"]) == (160, 40)
    # Stratified: every class has 20% of its digits in val (200 digits, class-balanced).
    assert np.bincount(val.targets, minlength=10).tolist() == [4] * 10
    names = lambda ds: {os.path.basename(p) for p, _ in ds.samples}  # noqa: E731
    assert not names(train) & names(val), "a digit scan is in both train and val"

    unlabeled = ImageFolder(tiny_demo_data["unlabeled_train"])
    # One folder per train scan (and none for a val scan), unlabeled_renders views each (1 here).
    renders = _manifest(tiny_demo_data)["params"]["unlabeled_renders"]
    assert len(unlabeled) == renders * len(train) == counts["unlabeled_train"]
    assert {c + ".jpg" for c in unlabeled.classes} == names(train)
    image = Image.open(train.samples[0][0])
    assert (image.mode, image.size) == ("RGB", (64, 64))
    # Coloured, not grey: colour jitter must have something to act on.
    pixels = np.asarray(image, dtype=np.float32)
    assert np.abs(pixels[..., 0] - pixels[..., 1]).mean() > 1.0


def test_voc_layout_loads_with_detectron2(tiny_demo_data):
    from detectron2.data.datasets.pascal_voc import load_voc_instances

    voc = tiny_demo_data["voc_root"]
    counts = _manifest(tiny_demo_data)["counts"]
    for split, n_images in (("trainval", 24), ("test", 8)):
        dicts = load_voc_instances(voc, split, DIGIT_CLASSES)
        assert len(dicts) == n_images == counts[f"det_{split}_images"]
        assert sum(len(d["annotations"]) for d in dicts) == counts[f"det_{split}_objects"]
        for d in dicts:
            width, height = Image.open(d["file_name"]).size
            assert (d["width"], d["height"]) == (width, height) == (160, 160)
            assert 1 <= len(d["annotations"]) <= 4
            for ann in d["annotations"]:
                x0, y0, x1, y1 = ann["bbox"]
                assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
                assert y1 - y0 >= 16, "digits must be big enough for a small detector"
                assert 0 <= ann["category_id"] < len(DIGIT_CLASSES)
        # Every class in every split, even this tiny one (an absent class scores AP 0 in VOC
        # evaluation).
        assert {a["category_id"] for d in dicts for a in d["annotations"]} == set(
            range(len(DIGIT_CLASSES))
        )
    trainval_ids = {d["image_id"] for d in load_voc_instances(voc, "trainval", DIGIT_CLASSES)}
    test_ids = {d["image_id"] for d in load_voc_instances(voc, "test", DIGIT_CLASSES)}
    assert not trainval_ids & test_ids


def test_voc_xml_has_the_fields_of_real_voc(tiny_demo_data):
    import xml.etree.ElementTree as ET

    voc = tiny_demo_data["voc_root"]
    tree = ET.parse(os.path.join(voc, "Annotations", "000000.xml"))
    assert tree.findtext("filename") == "000000.jpg"
    assert tree.findtext("size/depth") == "3"
    for obj in tree.findall("object"):
        assert obj.findtext("name") in DIGIT_CLASSES
        assert (obj.findtext("pose"), obj.findtext("truncated"), obj.findtext("difficult")) == (
            "Unspecified",
            "0",
            "0",
        )
        box = [int(obj.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
        assert box[0] >= 1 and box[1] >= 1, "VOC boxes are 1-based"


@pytest.mark.parametrize("split", ["trainval", "test"])
def test_coco_json_loads_and_masks_lie_in_boxes(tiny_demo_data, split):
    from detectron2.data import MetadataCatalog
    from detectron2.data.datasets import load_coco_json
    from detectron2.data.datasets.pascal_voc import load_voc_instances
    from detectron2.structures import BoxMode
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    json_file = tiny_demo_data[f"coco_{split}_json"]
    coco = COCO(json_file)
    assert [coco.cats[i]["name"] for i in sorted(coco.cats)] == list(DIGIT_CLASSES)
    assert sorted(coco.cats) == list(range(1, 11))

    name = f"test_demo_data_coco_{split}"
    dicts = load_coco_json(json_file, tiny_demo_data["image_root"], dataset_name=name)
    assert MetadataCatalog.get(name).thing_classes == list(DIGIT_CLASSES)
    voc = {
        d["file_name"]: d
        for d in load_voc_instances(tiny_demo_data["voc_root"], split, DIGIT_CLASSES)
    }
    assert len(dicts) == len(voc) == len(coco.imgs)

    for d in dicts:
        assert os.path.isfile(d["file_name"])
        height, width = d["height"], d["width"]
        for ann in d["annotations"]:
            assert ann["iscrowd"] == 0 and ann["bbox_mode"] == BoxMode.XYWH_ABS
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w > 0 and h > 0
            mask = mask_utils.decode(ann["segmentation"]).astype(bool)
            assert mask.shape == (height, width)
            ys, xs = np.nonzero(mask)
            assert len(xs) > 0
            # The box is the tight box of the stroke mask: the mask lies inside it and touches all
            # four sides.
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x, y, x + w, y + h)
        # The COCO and VOC versions describe the same scene: same boxes, same classes.
        coco_boxes = sorted(
            (a["category_id"], *BoxMode.convert(a["bbox"], BoxMode.XYWH_ABS, BoxMode.XYXY_ABS))
            for a in d["annotations"]
        )
        voc_boxes = sorted(
            (a["category_id"], *a["bbox"]) for a in voc[d["file_name"]]["annotations"]
        )
        assert coco_boxes == voc_boxes

    areas = [a["area"] for a in coco.anns.values()]
    masks = [mask_utils.decode(a["segmentation"]).sum() for a in coco.anns.values()]
    assert areas == masks


def test_same_seed_is_byte_identical_and_other_seed_differs(tmp_path):
    a = make_demo_data(tmp_path / "a", seed=3, **MINI)
    b = make_demo_data(tmp_path / "b", seed=3, **MINI)
    c = make_demo_data(tmp_path / "c", seed=4, **MINI)
    hashes_a, hashes_b, hashes_c = (_file_hashes(p["root"]) for p in (a, b, c))
    assert len(hashes_a) > 60 and hashes_a == hashes_b
    assert "MANIFEST.json" in hashes_a and INCOMPLETE_MARKER not in hashes_a
    # Another seed: other digits, pixels, annotations and manifest (file names may coincide).
    differing = [p for p in hashes_a if hashes_c.get(p) != hashes_a[p]]
    assert len(differing) > 0.9 * len(hashes_a)
    assert _manifest(a)["files"] == {
        p.replace(os.sep, "/"): h for p, h in hashes_a.items() if p != "MANIFEST.json"
    }


def test_refuses_to_overwrite_without_force_and_keeps_user_files(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "my_notes.txt").write_text("mine")
    with pytest.raises(DemoDataError, match="refusing.*not empty.*--force"):
        make_demo_data(out, seed=0, **MINI)
    assert os.listdir(out) == ["my_notes.txt"]

    paths = make_demo_data(out, seed=0, force=True, **MINI)
    assert (out / "my_notes.txt").read_text() == "mine"
    before = _file_hashes(out)
    stamp = os.stat(paths["manifest"]).st_mtime_ns

    # Same parameters again: already complete, nothing is rewritten.
    assert make_demo_data(out, seed=0, **MINI) == paths
    assert _file_hashes(out) == before and os.stat(paths["manifest"]).st_mtime_ns == stamp

    # Other parameters: refused, the folder is untouched.
    with pytest.raises(DemoDataError, match="different parameters.*seed.*--force"):
        make_demo_data(out, seed=1, **MINI)
    assert _file_hashes(out) == before

    # With force: replaced (seed 1 now), the user's file still there.
    make_demo_data(out, seed=1, force=True, **MINI)
    assert _manifest(paths)["params"]["seed"] == 1
    assert (out / "my_notes.txt").read_text() == "mine"


def test_half_written_folder_is_detected_and_regenerated(tmp_path):
    out = tmp_path / "data"
    paths = make_demo_data(out, seed=0, **MINI)
    complete = _file_hashes(out)
    # What a crash mid-generation leaves: the in-progress marker, some files, no manifest.
    os.unlink(paths["manifest"])
    os.unlink(paths["coco_test_json"])
    (out / INCOMPLETE_MARKER).write_text("interrupted")
    make_demo_data(out, seed=0, **MINI)
    assert _file_hashes(out) == complete


def test_bad_arguments_say_what_to_do(tmp_path):
    with pytest.raises(DemoDataError, match="limit=10 is too small"):
        make_demo_data(tmp_path / "x", limit=10, verbose=False)
    with pytest.raises(DemoDataError, match="at least 2 scenes"):
        make_demo_data(tmp_path / "x", limit=60, n_det_test=1, verbose=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(DemoDataError, match="not a folder"):
        make_demo_data(tmp_path / "file", **MINI)


def test_cli_refuses_non_empty_folder_with_a_clear_message(tmp_path, repo_stays_clean):
    (tmp_path / "keep.txt").write_text("x")
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "tools", "make_demo_data.py"),
            "--out",
            str(tmp_path),
            "--limit",
            "60",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "refusing to write demo data" in proc.stderr and "--force" in proc.stderr
    assert os.listdir(tmp_path) == ["keep.txt"]


def test_detectron2_evaluators_score_the_ground_truth_perfectly(tiny_demo_data, tmp_path):
    """The files are complete enough for Detectron2's VOC and COCO evaluators, and consistent with
    the images.
    """
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances, register_pascal_voc
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator
    from detectron2.structures import BitMasks, Boxes, BoxMode, Instances
    from pycocotools import mask as mask_utils

    voc_name, coco_name = "test_demo_data_voc_eval", "test_demo_data_coco_eval"
    register_pascal_voc(
        voc_name, tiny_demo_data["voc_root"], "test", 2007, class_names=DIGIT_CLASSES
    )
    register_coco_instances(
        coco_name, {}, tiny_demo_data["coco_test_json"], tiny_demo_data["image_root"]
    )

    def perfect(d, masks):
        h, w = d["height"], d["width"]
        inst = Instances((h, w))
        boxes = [
            BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]
        ]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        if masks:
            inst.pred_masks = BitMasks(
                torch.stack(
                    [
                        torch.from_numpy(mask_utils.decode(a["segmentation"])).bool()
                        for a in d["annotations"]
                    ]
                )
            ).tensor
        return {"instances": inst}

    voc_eval = PascalVOCDetectionEvaluator(voc_name)
    voc_eval.reset()
    for d in DatasetCatalog.get(voc_name):
        voc_eval.process([{"image_id": d["image_id"]}], [perfect(d, masks=False)])
    assert voc_eval.evaluate()["bbox"]["AP50"] == pytest.approx(100.0)

    coco_eval = COCOEvaluator(
        coco_name, tasks=("bbox", "segm"), output_dir=str(tmp_path), use_fast_impl=False
    )
    coco_eval.reset()
    for d in DatasetCatalog.get(coco_name):
        coco_eval.process([{"image_id": d["image_id"]}], [perfect(d, masks=True)])
    results = coco_eval.evaluate()
    assert results["bbox"]["AP"] == pytest.approx(100.0) and results["segm"]["AP"] == pytest.approx(
        100.0
    )
    assert MetadataCatalog.get(coco_name).thing_classes == list(DIGIT_CLASSES)


def test_the_palette_is_shared_flat_and_contrasting():
    """Instance identity is content: images differ in colour only by their palette pair, so two
    images of one pair differ where their digits are only."""
    from sklearn.datasets import load_digits

    from detection.demo.data import MIN_CONTRAST, make_palette, render_digit_image

    scans = load_digits().images
    palette = make_palette(seed=0, size=8)
    assert len(palette) == 8 and all(np.linalg.norm(bg - fg) > MIN_CONTRAST for bg, fg in palette)
    assert len({tuple(bg.round(3)) for bg, _ in palette}) == 8  # 8 different pairs
    one = palette[:1]
    a, b = (render_digit_image(scans[i], one, seed=0, index=i) for i in (0, 1))
    corner = (slice(0, 4), slice(0, 4))  # outside every glyph (glyphs <= 85 % of the side, centred)
    assert np.array_equal(a[corner], b[corner])
    assert np.allclose(a[corner], one[0][0]) and np.abs(a - b).mean() > 0.01
    stroke = a[np.abs(a - one[0][0]).sum(-1) > 0.5 * np.linalg.norm(one[0][1] - one[0][0])]
    assert len(stroke) > 50  # the digit, in between the pair's two colours
    drawn = {tuple(render_digit_image(scans[0], palette, 0, i)[0, 0].round(3)) for i in range(60)}
    assert drawn == {tuple(bg.round(3)) for bg, _ in palette}  # every pair is drawn, no other


def test_the_demo_renders_each_train_scan_four_times_in_one_colour_pair(tmp_path):
    paths = make_demo_data(tmp_path / "d", limit=40, n_det_trainval=2, n_det_test=2, verbose=False)
    scans = sorted(os.listdir(paths["unlabeled_train"]))
    counts = _manifest(paths)["counts"]
    assert len(scans) == counts["cls_train"] and 4 * len(scans) == counts["unlabeled_train"]
    corners = []
    for scan in scans:
        views = [
            np.asarray(Image.open(os.path.join(paths["unlabeled_train"], scan, f)), np.float32)
            for f in sorted(os.listdir(os.path.join(paths["unlabeled_train"], scan)))
        ]
        assert len(views) == 4
        assert np.abs(views[0] - views[1]).mean() > 1.0, "the views of one scan must differ"
        corner = [v[:4, :4].mean((0, 1)) for v in views]
        assert all(np.abs(c - corner[0]).max() < 3 for c in corner), "one background per scan"
        corners.append(tuple(np.round(corner[0] / 8)))
    assert 2 <= len(set(corners)) <= 8  # scans share the palette's few backgrounds
