"""Tiny datasets written in each benchmark's REAL on-disk layout, under one DETECTRON2_DATASETS
root.

Every writer puts files where Detectron2's builtin registrations (and ours in
``detection.modeling.semantic_seg``) look for them, with the real file names, formats and annotation
schemas: Pascal VOC xml + ImageSets, COCO / LVIS json with the real category lists,
Cityscapes polygons json with the label PNGs made by cityscapesscripts itself, VOC palette PNGs.
Images are small random scenes with a few rectangles (the objects), so runs take seconds.

Imported by the test files of this folder (pytest puts the folder on sys.path).
"""

import json
import os

import numpy as np
from PIL import Image

IMAGE_HW = (96, 128)  # small, but larger than the smallest anchors (32 px)
CITYSCAPES_HW = (64, 128)  # Cityscapes' 1:2 aspect


def _mkdir(*parts):
    path = os.path.join(*parts)
    os.makedirs(path, exist_ok=True)
    return path


def _boxes(rng, h, w, n):
    """``n`` XYXY integer boxes of 24..48 px inside an h x w image."""
    out = []
    for _ in range(n):
        bw, bh = rng.integers(24, 49, size=2)
        x1 = int(rng.integers(0, w - bw))
        y1 = int(rng.integers(0, h - bh))
        out.append((x1, y1, x1 + int(bw), y1 + int(bh)))
    return out


def _scene(rng, h, w, boxes):
    """A noisy background with each box filled by a flat random colour."""
    img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = rng.integers(120, 256, size=3, dtype=np.uint8)
    return img


def _save(img, path, **kw):
    Image.fromarray(img).save(path, **kw)


# ---------------------------------------------------------------------------------------------
# Pascal VOC detection: VOC<year>/{Annotations/*.xml, JPEGImages/*.jpg, ImageSets/Main/<split>.txt}


def write_voc_detection(root, year, splits, seed=0):
    """``splits``: {split: number of images}; ids are <year>_<n>, as in VOC2012's naming."""
    from detectron2.data.datasets.pascal_voc import CLASS_NAMES

    rng = np.random.default_rng(seed)
    voc = os.path.join(root, f"VOC{year}")
    ann_dir, img_dir, set_dir = (
        _mkdir(voc, "Annotations"),
        _mkdir(voc, "JPEGImages"),
        _mkdir(voc, "ImageSets", "Main"),
    )
    h, w = IMAGE_HW
    n = 0
    for split, count in splits.items():
        ids = []
        for _ in range(count):
            n += 1
            fileid = f"{year}_{n:06d}"
            boxes = _boxes(rng, h, w, 2)
            _save(_scene(rng, h, w, boxes), os.path.join(img_dir, fileid + ".jpg"), quality=95)
            objects = "".join(
                f"<object><name>{CLASS_NAMES[(n + k) % len(CLASS_NAMES)]}</name>"
                f"<pose>Unspecified</pose>"
                f"<truncated>0</truncated><difficult>0</difficult><bndbox>"
                # VOC boxes are 1-based, inclusive
                f"<xmin>{x1 + 1}</xmin><ymin>{y1 + 1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax>"
                f"</bndbox></object>"
                for k, (x1, y1, x2, y2) in enumerate(boxes)
            )
            with open(os.path.join(ann_dir, fileid + ".xml"), "w") as f:
                f.write(
                    f"<annotation><folder>VOC{year}</folder><filename>{fileid}.jpg</filename>"
                    f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
                    f"<segmented>0</segmented>{objects}</annotation>"
                )
            ids.append(fileid)
        with open(os.path.join(set_dir, split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")


# ---------------------------------------------------------------------------------------------
# Pascal VOC 2012 segmentation: SegmentationClass (palette PNGs), SegmentationClassAug (index
# PNGs, the SBD-augmented set), ImageSets/Segmentation/{train,val,train_aug}.txt


def voc_palette():
    """The VOC devkit's colour map (labelcolormap.m): class i -> bits of i spread over RGB."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


def _voc_label(rng, h, w, boxes):
    label = np.zeros((h, w), dtype=np.uint8)
    for x1, y1, x2, y2 in boxes:
        label[y1:y2, x1:x2] = rng.integers(1, 21)
        # VOC marks object borders 255 ("void"), ignored in training and evaluation
        label[y1:y2, [x1, x2 - 1]] = 255
        label[[y1, y2 - 1], x1:x2] = 255
    return label


def write_voc_sem_seg(root, splits=(("train", 2), ("val", 2), ("train_aug", 3)), seed=1):
    rng = np.random.default_rng(seed)
    voc = os.path.join(root, "VOC2012")
    img_dir, set_dir = _mkdir(voc, "JPEGImages"), _mkdir(voc, "ImageSets", "Segmentation")
    cls_dir, aug_dir = _mkdir(voc, "SegmentationClass"), _mkdir(voc, "SegmentationClassAug")
    h, w = IMAGE_HW
    n = 0
    for split, count in splits:
        ids = []
        for _ in range(count):
            n += 1
            fileid = f"2011_{n:06d}"
            boxes = _boxes(rng, h, w, 2)
            _save(_scene(rng, h, w, boxes), os.path.join(img_dir, fileid + ".jpg"), quality=95)
            label = _voc_label(rng, h, w, boxes)
            if split == "train_aug":
                # SegmentationClassAug: grayscale PNGs whose values are the class ids
                Image.fromarray(label, mode="L").save(os.path.join(aug_dir, fileid + ".png"))
            else:
                png = Image.fromarray(label, mode="P")
                png.putpalette(voc_palette())
                png.save(os.path.join(cls_dir, fileid + ".png"))
            ids.append(fileid)
        with open(os.path.join(set_dir, split + ".txt"), "w") as f:
            f.write("\n".join(ids) + "\n")


# ---------------------------------------------------------------------------------------------
# COCO 2017: coco/{train2017,val2017}/*.jpg,
# coco/annotations/{instances,person_keypoints}_<split>.json

COCO_KEYPOINT_NAMES = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
COCO_SKELETON = [
    [16, 14],
    [14, 12],
    [17, 15],
    [15, 13],
    [12, 13],
    [6, 12],
    [7, 13],
    [6, 7],
    [6, 8],
    [7, 9],
    [8, 10],
    [9, 11],
    [2, 3],
    [1, 2],
    [1, 3],
    [2, 4],
    [3, 5],
    [4, 6],
    [5, 7],
]


def _polygon(x1, y1, x2, y2):
    return [
        [float(x1), float(y1), float(x2), float(y1), float(x2), float(y2), float(x1), float(y2)]
    ]


def _keypoints(rng, x1, y1, x2, y2):
    xs = rng.uniform(x1 + 1, x2 - 1, size=17)
    ys = rng.uniform(y1 + 1, y2 - 1, size=17)
    return [v for x, y in zip(xs, ys) for v in (round(float(x), 1), round(float(y), 1), 2)]


def write_coco(root, split, n_images, seed=2):
    """Images in coco/<split>/ and both instances_<split>.json (80 real categories, polygon
    masks) and person_keypoints_<split>.json (person, 17 keypoints) for them."""
    from detectron2.data.datasets.builtin_meta import COCO_CATEGORIES

    rng = np.random.default_rng(seed)
    img_dir, ann_dir = _mkdir(root, "coco", split), _mkdir(root, "coco", "annotations")
    things = [c for c in COCO_CATEGORIES if c["isthing"]]
    h, w = IMAGE_HW
    base_id = {"train2017": 100000, "val2017": 200000}.get(split, 300000)
    images, instances, people = [], [], []
    for n in range(n_images):
        image_id = base_id + n
        file_name = f"{image_id:012d}.jpg"
        boxes = _boxes(rng, h, w, 2)
        _save(_scene(rng, h, w, boxes), os.path.join(img_dir, file_name), quality=95)
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "height": h,
                "width": w,
                "coco_url": f"http://images.cocodataset.org/{split}/{file_name}",
                "license": 1,
            }
        )
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            common = {
                "image_id": image_id,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float((x2 - x1) * (y2 - y1)),
                "iscrowd": 0,
                "segmentation": _polygon(x1, y1, x2, y2),
            }
            # category 1 is "person" in COCO: every image has one, the other box is another class
            cat = things[0] if k == 0 else things[1 + (n % (len(things) - 1))]
            instances.append({**common, "id": len(instances) + 1, "category_id": cat["id"]})
            if k == 0:
                people.append(
                    {
                        **common,
                        "id": len(people) + 1,
                        "category_id": 1,
                        "keypoints": _keypoints(rng, x1, y1, x2, y2),
                        "num_keypoints": 17,
                    }
                )
    head = {
        "info": {"description": "tiny COCO-layout test data"},
        "licenses": [{"id": 1, "name": "test", "url": ""}],
        "images": images,
    }
    with open(os.path.join(ann_dir, f"instances_{split}.json"), "w") as f:
        json.dump(
            {
                **head,
                "annotations": instances,
                "categories": [
                    {"id": c["id"], "name": c["name"], "supercategory": "thing"} for c in things
                ],
            },
            f,
        )
    with open(os.path.join(ann_dir, f"person_keypoints_{split}.json"), "w") as f:
        json.dump(
            {
                **head,
                "annotations": people,
                "categories": [
                    {
                        "id": 1,
                        "name": "person",
                        "supercategory": "person",
                        "keypoints": list(COCO_KEYPOINT_NAMES),
                        "skeleton": COCO_SKELETON,
                    }
                ],
            },
            f,
        )
    return images


# ---------------------------------------------------------------------------------------------
# LVIS v0.5: lvis/lvis_v0.5_{train,val}.json over the COCO 2017 images (found via coco_url)


def write_lvis_v05(root, split, coco_images, seed=3):
    from detectron2.data.datasets.lvis_v0_5_categories import LVIS_CATEGORIES

    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    images, annotations = [], []
    frequent = [c["id"] for c in LVIS_CATEGORIES if c["frequency"] == "f"]
    for img in coco_images:
        images.append({**img, "not_exhaustive_category_ids": [], "neg_category_ids": []})
        for x1, y1, x2, y2 in _boxes(rng, h, w, 2):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": img["id"],
                    "category_id": int(rng.choice(frequent)),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float((x2 - x1) * (y2 - y1)),
                    "segmentation": _polygon(x1, y1, x2, y2),
                }
            )
    counts = {}
    for a in annotations:
        counts.setdefault(a["category_id"], set()).add(a["image_id"])
    categories = [
        {
            **c,
            "image_count": len(counts.get(c["id"], ())),
            "instance_count": sum(a["category_id"] == c["id"] for a in annotations),
        }
        for c in LVIS_CATEGORIES
    ]
    path = os.path.join(_mkdir(root, "lvis"), f"lvis_v0.5_{split}.json")
    with open(path, "w") as f:
        json.dump(
            {
                "info": {},
                "licenses": [],
                "images": images,
                "annotations": annotations,
                "categories": categories,
            },
            f,
        )


# ---------------------------------------------------------------------------------------------
# Cityscapes: leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png and
# gtFine/<split>/<city>/..._gtFine_{polygons.json, labelIds.png, instanceIds.png, labelTrainIds.png}


def write_cityscapes(root, split, n_images, city="aachen", seed=4):
    """Polygons json as annotated; the label/instance PNGs made by cityscapesscripts' own
    preparation functions (what ``csCreateTrainIdLabelImgs`` and the official release do)."""
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import json2labelImg

    rng = np.random.default_rng(seed)
    img_dir = _mkdir(root, "cityscapes", "leftImg8bit", split, city)
    gt_dir = _mkdir(root, "cityscapes", "gtFine", split, city)
    h, w = CITYSCAPES_HW
    for n in range(n_images):
        stem = f"{city}_{n:06d}_000019"
        boxes = _boxes(rng, h, w, 2)
        _save(_scene(rng, h, w, boxes), os.path.join(img_dir, stem + "_leftImg8bit.png"))
        # Labelled everywhere, as real frames nearly are: a prediction on unlabelled (void)
        # pixels is ignored by the official evaluation, and with only ignored predictions for a
        # class cityscapesscripts (2.3.0) fails with an IndexError.
        objects = [
            {"label": "building", "polygon": [[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]]},
            {
                "label": "road",
                "polygon": [[0, h // 2], [w - 1, h // 2], [w - 1, h - 1], [0, h - 1]],
            },
            {"label": "sky", "polygon": [[0, 0], [w - 1, 0], [w - 1, 8], [0, 8]]},
        ]
        for k, (x1, y1, x2, y2) in enumerate(boxes):
            objects.append(
                {
                    "label": ("car", "person")[k % 2],
                    "polygon": [[x1, y1], [x2, y1], [x2, y2], [x1, y2]],
                }
            )
        polygons = os.path.join(gt_dir, stem + "_gtFine_polygons.json")
        with open(polygons, "w") as f:
            json.dump({"imgHeight": h, "imgWidth": w, "objects": objects}, f)
        json2labelImg(polygons, os.path.join(gt_dir, stem + "_gtFine_labelIds.png"), "ids")
        json2labelImg(
            polygons, os.path.join(gt_dir, stem + "_gtFine_labelTrainIds.png"), "trainIds"
        )
        # json2instanceImg saves a 32-bit image, which Pillow >= 10 cannot write as PNG; the
        # released instanceIds PNGs are 16-bit, so save the same ids that way.
        annotation = Annotation()
        annotation.fromJsonFile(polygons)
        ids = np.asarray(createInstanceImage(annotation, "ids"), dtype=np.uint16)
        Image.fromarray(ids).save(os.path.join(gt_dir, stem + "_gtFine_instanceIds.png"))


# ---------------------------------------------------------------------------------------------


def write_all(root):
    """Every layout the configs in configs/ read (except DensePose), in one root. ~1 s."""
    root = os.fspath(root)
    write_voc_detection(root, 2007, {"trainval": 2, "test": 2}, seed=10)
    write_voc_detection(root, 2012, {"trainval": 2}, seed=11)
    write_voc_sem_seg(root)
    train = write_coco(root, "train2017", 2, seed=12)
    val = write_coco(root, "val2017", 2, seed=13)
    write_lvis_v05(root, "train", train, seed=14)
    write_lvis_v05(root, "val", val, seed=15)
    write_cityscapes(root, "train", 2, city="aachen", seed=16)
    write_cityscapes(root, "val", 2, city="frankfurt", seed=17)
    return root


# ---------------------------------------------------------------------------------------------
# DensePose-COCO: coco/annotations/densepose_{train2014,minival2014,valminusminival2014}.json over
# COCO 2014 images (coco/train2014, coco/val2014), the paths of DensePose's registration.

DENSEPOSE_SPLITS = {  # annotation file -> image folder
    "densepose_train2014": "train2014",
    "densepose_valminusminival2014": "val2014",
    "densepose_minival2014": "val2014",
}


def _densepose_annotation(rng, x1, y1, x2, y2, n_points=24):
    """DensePose fields of one person: 14 part masks (RLE on the 256x256 box grid) and points
    with a part index (1..24) and UV in [0, 1], at box coordinates scaled to 0..255."""
    import pycocotools.mask as mask_utils

    masks = []
    for part in range(14):
        m = np.zeros((256, 256), dtype=np.uint8, order="F")
        r0 = (part // 4) * 64
        c0 = (part % 4) * 64
        m[r0 : r0 + 64, c0 : c0 + 64] = 1
        rle = mask_utils.encode(m)
        rle["counts"] = rle["counts"].decode("ascii")
        masks.append(rle)
    return {
        "dp_masks": masks,
        "dp_I": [float(v) for v in rng.integers(1, 25, n_points)],
        "dp_U": [float(v) for v in rng.uniform(0, 1, n_points)],
        "dp_V": [float(v) for v in rng.uniform(0, 1, n_points)],
        "dp_x": [float(v) for v in rng.uniform(0, 255, n_points)],
        "dp_y": [float(v) for v in rng.uniform(0, 255, n_points)],
    }


def write_densepose_coco(root, n_images=2, seed=5):
    """The three DensePose-COCO splits with ``n_images`` images each (one person per image)."""
    rng = np.random.default_rng(seed)
    ann_dir = _mkdir(root, "coco", "annotations")
    h, w = IMAGE_HW
    for k, (ann_name, image_folder) in enumerate(DENSEPOSE_SPLITS.items()):
        img_dir = _mkdir(root, "coco", image_folder)
        images, annotations = [], []
        for n in range(n_images):
            image_id = 400000 + 1000 * k + n
            file_name = f"COCO_{image_folder}_{image_id:012d}.jpg"
            x1, y1, x2, y2 = _boxes(rng, h, w, 1)[0]
            _save(
                _scene(rng, h, w, [(x1, y1, x2, y2)]), os.path.join(img_dir, file_name), quality=95
            )
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": float((x2 - x1) * (y2 - y1)),
                    "segmentation": _polygon(x1, y1, x2, y2),
                    "keypoints": _keypoints(rng, x1, y1, x2, y2),
                    "num_keypoints": 17,
                    **_densepose_annotation(rng, x1, y1, x2, y2),
                }
            )
        with open(os.path.join(ann_dir, ann_name + ".json"), "w") as f:
            json.dump(
                {
                    "images": images,
                    "annotations": annotations,
                    "categories": [
                        {
                            "id": 1,
                            "name": "person",
                            "supercategory": "person",
                            "keypoints": list(COCO_KEYPOINT_NAMES),
                            "skeleton": COCO_SKELETON,
                        }
                    ],
                },
                f,
            )
    return root
