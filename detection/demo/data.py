"""Small, real demo data for the whole pipeline, generated from a seed (never committed).

Source: scikit-learn's bundled ``load_digits`` (1,797 real 8x8 scans of hand-written
digits, 10 classes), so nothing is downloaded. Each digit is upscaled and rendered as a
coloured stroke on a flat background with a small random affine, in one of ``palette_size``
shared (background, stroke) colour pairs. From these renders:

    out_dir/
      digits_unlabeled/train/digit_NNNNN/rR.jpg            pretraining set: one folder per train
      scan, ``unlabeled_renders`` views each (data.positives=folder takes a query's key from them)
      digits_cls/{train,val}/<class>/digit_NNNNN.jpg      labeled, stratified split (linear / kNN /
      supervised)
      VOCdigits/VOC2007/JPEGImages/NNNNNN.jpg             "digit scenes": 1..max_digits digits on a
      flat background
      VOCdigits/VOC2007/Annotations/NNNNNN.xml            Pascal VOC XML (1-based inclusive pixel
      boxes)
      VOCdigits/VOC2007/ImageSets/Main/{trainval,test}.txt
      digits_coco/annotations/instances_{trainval,test}.json   the same scenes as COCO (boxes +
      stroke masks, RLE)
      MANIFEST.json                                        written last: parameters, counts, sha256
      of every file

The unlabeled set renders the *train* split's scans only (as ImageNet pretraining never
sees ImageNet val), so that instance identity is content: the views of one scan differ by their
affine and share its colour pair with about 1/``palette_size`` of all scans, so telling a scan
from its negatives takes its digit. With textures or colours of its own per image (format 1 and
2), the two views of an image shared a pattern no other image had and MoCo's short demo runs
solved instance discrimination by it: their kNN stayed below the random network's (README Status,
the session-7 search). The labeled renders and the scenes use the same palette (a colour pair
drawn per image), so the downstream data is in the pretraining domain.

Detection scenes of ``trainval`` paste digits of the classification
train split, ``test`` scenes digits of the val split, so no digit scan is in both.

Determinism: every image is drawn from its own ``numpy`` Generator seeded by
``(seed, stream, index)``; JPEG quality is fixed; JSON keys are sorted; no timestamps or
absolute paths are written. The same seed gives byte-identical files.
"""

import hashlib
import io
import json
import math
import os
import shutil
import time
import xml.etree.ElementTree as ET

import cv2
import numpy as np
from PIL import Image

from pretrain.io import atomic_write_bytes
from pretrain.meters import Rate

# fmt: off
DIGIT_CLASSES = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
)
# fmt: on

MANIFEST_NAME = "MANIFEST.json"
# Present while a generation is running: a folder with it but without a manifest is our
# own half-written output and may be regenerated without --force.
INCOMPLETE_MARKER = ".demo_data_incomplete"
# Bump when the rendering changes, so an old folder is not taken for a current one.
FORMAT_VERSION = 3  # 2: the unlabeled set's shared styles; 3: one flat palette, views per scan
JPEG_QUALITY = 90
PALETTE_SIZE = 8  # the session-7 search's (README Status)
MIN_CONTRAST = 0.55  # RGB distance between a stroke and its background

# Top-level entries this generator owns inside out_dir (the only ones --force replaces).
_OWNED = (
    "digits_unlabeled",
    "digits_cls",
    "VOCdigits",
    "digits_coco",
    MANIFEST_NAME,
    INCOMPLETE_MARKER,
)

# Independent random streams, so that e.g. changing the number of scenes leaves the
# classification images unchanged.
_STREAM_SPLIT, _STREAM_DIGIT, _STREAM_SCENE, _STREAM_STYLE, _STREAM_UNLABELED = 0, 1, 2, 3, 4


class DemoDataError(RuntimeError):
    """The output folder cannot be (re)generated as asked; the message says how to fix it."""


def demo_data_paths(out_dir):
    """The paths ``make_demo_data`` returns, for a folder it generated."""
    root = os.path.abspath(os.fspath(out_dir))
    voc = os.path.join(root, "VOCdigits", "VOC2007")
    coco_ann = os.path.join(root, "digits_coco", "annotations")
    return {
        "root": root,
        "manifest": os.path.join(root, MANIFEST_NAME),
        "unlabeled_root": os.path.join(root, "digits_unlabeled"),
        "unlabeled_train": os.path.join(root, "digits_unlabeled", "train"),
        "cls_root": os.path.join(root, "digits_cls"),
        "cls_train": os.path.join(root, "digits_cls", "train"),
        "cls_val": os.path.join(root, "digits_cls", "val"),
        "voc_root": voc,
        "image_root": os.path.join(voc, "JPEGImages"),
        "coco_trainval_json": os.path.join(coco_ann, "instances_trainval.json"),
        "coco_test_json": os.path.join(coco_ann, "instances_test.json"),
    }


# ----------------------------------------------------------------------------- rendering


def _rng(seed, stream, *index):
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream, *map(int, index)]))


def _contrasting_colour(rng, against):
    """A random stroke colour far enough (RGB distance) from the background colour ``against``."""
    for _ in range(100):
        colour = rng.random(3).astype(np.float32)
        if np.linalg.norm(colour - against) > MIN_CONTRAST:
            return colour
    return (1.0 - against).astype(np.float32)  # the complement always contrasts enough


def make_palette(seed, size=PALETTE_SIZE):
    """The demo's ``size`` shared (background, stroke) colour pairs, float32 RGB in [0, 1]."""
    palette = []
    for k in range(size):
        rng = _rng(seed, _STREAM_STYLE, k)
        background = rng.random(3).astype(np.float32)
        palette.append((background, _contrasting_colour(rng, background)))
    return palette


def _flat(colour, height, width):
    return np.broadcast_to(np.asarray(colour, np.float32), (height, width, 3))


_UPSAMPLE = (
    8  # the 8x8 scan (plus a 1-pixel empty border) is first upsampled smoothly by this factor
)


def _glyph_source(digit):
    """8x8 scan in [0, 16] -> smooth (10*8)x(10*8) float image in [0, 1] with an empty border."""
    padded = np.pad(digit.astype(np.float32) / 16.0, 1)
    size = padded.shape[0] * _UPSAMPLE
    return np.clip(cv2.resize(padded, (size, size), interpolation=cv2.INTER_CUBIC), 0, 1)


def _digit_alpha(digit, out_hw, glyph_size, center, angle_deg, shear):
    """Coverage (alpha, float32 in [0, 1]) of one digit stroke placed in an ``out_hw`` canvas.

    The 8x8 glyph area is scaled to ``glyph_size`` pixels, sheared, rotated and centred
    at ``center`` (x, y). The smooth upsample is then sharpened into a stroke with soft edges.
    """
    src = _glyph_source(digit)
    src_c = (src.shape[1] - 1) / 2.0
    scale = glyph_size / (8.0 * _UPSAMPLE)
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], np.float64)
    lin = rot @ np.array([[1.0, shear], [0.0, 1.0]]) * scale
    offset = np.asarray(center, np.float64) - lin @ np.array([src_c, src_c])
    matrix = np.hstack([lin, offset[:, None]])
    h, w = out_hw
    warped = cv2.warpAffine(
        src, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return np.clip((warped - 0.2) / 0.45, 0, 1)


def _composite(background, alpha, colour):
    return background * (1 - alpha[..., None]) + colour * alpha[..., None]


def _to_jpeg(image01):
    buf = io.BytesIO()
    Image.fromarray(np.round(image01 * 255).astype(np.uint8), "RGB").save(
        buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, subsampling=0
    )
    return buf.getvalue()


def _jittered_digit_alpha(digit, rng, image_size):
    """The stroke mask of ``digit`` at a random size, position, rotation and shear."""
    glyph = image_size * rng.uniform(0.6, 0.85)
    jitter = image_size * 0.06
    center = (
        image_size / 2 + rng.uniform(-jitter, jitter),
        image_size / 2 + rng.uniform(-jitter, jitter),
    )
    alpha = _digit_alpha(
        digit,
        (image_size, image_size),
        glyph,
        center,
        rng.uniform(-15, 15),
        rng.uniform(-0.15, 0.15),
    )
    return alpha


def render_digit_image(digit, palette, seed, index, image_size=64):
    """One labeled image of ``digit`` (8x8 in [0, 16]), float32 HxWx3 in [0, 1]: its own affine,
    in a colour pair drawn from ``palette``."""
    rng = _rng(seed, _STREAM_DIGIT, index)
    background, stroke = palette[int(rng.integers(len(palette)))]
    alpha = _jittered_digit_alpha(digit, rng, image_size)
    return _composite(_flat(background, image_size, image_size), alpha, stroke)


def render_unlabeled_views(digit, palette, seed, scan, renders, image_size=64):
    """The pretraining views of one scan: ``renders`` images, each with its own affine, all in the
    scan's one colour pair from ``palette`` (so colour tells no view of the scan from another)."""
    background, stroke = palette[int(_rng(seed, _STREAM_UNLABELED, scan).integers(len(palette)))]
    flat = _flat(background, image_size, image_size)
    return [
        _composite(
            flat,
            _jittered_digit_alpha(digit, _rng(seed, _STREAM_UNLABELED, scan, 1 + r), image_size),
            stroke,
        )
        for r in range(renders)
    ]


class ClassCycle:
    """Object classes for a split, in seeded random permutations of all classes back to back.

    Every run of 10 consecutive objects covers all 10 classes, so even a tiny split has
    every class (the VOC evaluator averages AP over all classes, and an absent class scores 0).
    """

    def __init__(self, rng, n_classes=len(DIGIT_CLASSES)):
        self.rng, self.n_classes, self.pending = rng, n_classes, []

    def peek(self):
        if not self.pending:
            self.pending = list(self.rng.permutation(self.n_classes))
        return int(self.pending[0])

    def pop(self):
        return self.pending.pop(0)


def _boxes_within(a, b, gap):
    """Whether inclusive pixel boxes ``a`` and ``b`` (x0, y0, x1, y1) overlap or are closer than
    ``gap`` pixels.
    """
    return a[0] <= b[2] + gap and b[0] <= a[2] + gap and a[1] <= b[3] + gap and b[1] <= a[3] + gap


def render_scene(
    pool_digits,
    pool_labels,
    palette,
    seed,
    index,
    scene_size=(160, 160),
    max_digits=4,
    classes=None,
):
    """One detection scene: 1..max_digits non-overlapping digits in one colour pair of ``palette``.

    Returns (image float32 HxWx3, list of objects {"label", "box" (x0, y0, x1, y1) inclusive
    pixel indices, "mask" bool HxW}). Digits are drawn from the given pool; their classes
    from ``classes`` (a ``ClassCycle``), or at random if None.
    """
    h, w = scene_size
    rng = _rng(seed, _STREAM_SCENE, index)
    background, stroke = palette[int(rng.integers(len(palette)))]
    image = _flat(background, h, w)
    short = min(h, w)
    # Glyphs of at least ~20 px so that a small detector's anchors can cover them.
    g_lo, g_hi = max(20.0, 0.18 * short), max(26.0, 0.36 * short)
    wanted = int(rng.integers(1, max_digits + 1))
    objects, attempts = [], 0
    while len(objects) < wanted and attempts < 60:
        attempts += 1
        glyph = rng.uniform(g_lo, g_hi)
        margin = (
            0.65 * glyph
        )  # half-extent of the glyph square after a 15 degree rotation, rounded up
        if w - 2 * margin <= 0 or h - 2 * margin <= 0:
            raise DemoDataError(
                f"scene_size={scene_size} is too small for digits of {glyph:.0f} "
                "px; use at least (64, 64)"
            )
        center = (rng.uniform(margin, w - margin), rng.uniform(margin, h - margin))
        if classes is None:
            k = int(rng.integers(len(pool_labels)))
        else:
            members = np.flatnonzero(pool_labels == classes.peek())
            k = int(members[rng.integers(len(members))])
        alpha = _digit_alpha(
            pool_digits[k], (h, w), glyph, center, rng.uniform(-15, 15), rng.uniform(-0.15, 0.15)
        )
        mask = alpha > 0.5
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            continue
        box = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
        if box[0] == 0 or box[1] == 0 or box[2] == w - 1 or box[3] == h - 1:
            continue  # touches the border: it might be cut, and we promise truncated=0
        # No two boxes may touch: boxes stay unambiguous and masks unoccluded.
        if any(_boxes_within(box, o["box"], gap=2) for o in objects):
            continue
        image = _composite(image, alpha, stroke)
        objects.append({"label": int(pool_labels[k]), "box": box, "mask": mask})
        if classes is not None:
            classes.pop()
    return image, objects


# ----------------------------------------------------------------------------- writers


def _voc_xml(file_id, width, height, objects):
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC2007"
    ET.SubElement(root, "filename").text = f"{file_id}.jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "MoCo-transfer demo digit scenes (sklearn load_digits)"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = DIGIT_CLASSES[obj["label"]]
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        bnd = ET.SubElement(node, "bndbox")
        x0, y0, x1, y1 = obj["box"]
        # VOC boxes are 1-based inclusive pixel indices (Detectron2 subtracts 1 from xmin/ymin).
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (x0 + 1, y0 + 1, x1 + 1, y1 + 1)):
            ET.SubElement(bnd, key).text = str(value)
    ET.indent(root)
    return (ET.tostring(root, encoding="unicode") + "\n").encode("utf-8")


def _coco_json(split, images):
    from pycocotools import mask as mask_utils

    coco_images, coco_anns = [], []
    for image_id, (file_id, height, width, objects) in enumerate(images, start=1):
        coco_images.append(
            {"id": image_id, "file_name": f"{file_id}.jpg", "height": height, "width": width}
        )
        for obj in objects:
            rle = mask_utils.encode(np.asfortranarray(obj["mask"].astype(np.uint8)))
            rle["counts"] = rle["counts"].decode("ascii")
            x0, y0, x1, y1 = obj["box"]
            coco_anns.append(
                {
                    "id": len(coco_anns) + 1,
                    "image_id": image_id,
                    "category_id": obj["label"] + 1,
                    # COCO boxes are [x, y, w, h] in continuous coordinates: pixel i spans [i, i +
                    # 1).
                    "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                    "area": float(mask_utils.area(rle)),
                    "iscrowd": 0,
                    "segmentation": {
                        "size": [int(s) for s in rle["size"]],
                        "counts": rle["counts"],
                    },
                }
            )
    data = {
        "info": {
            "description": f"MoCo-transfer demo digit scenes, split {split}",
            "version": str(FORMAT_VERSION),
        },
        "licenses": [],
        "categories": [
            {"id": i + 1, "name": name, "supercategory": "digit"}
            for i, name in enumerate(DIGIT_CLASSES)
        ],
        "images": coco_images,
        "annotations": coco_anns,
    }
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


class _Writer:
    """Writes files under one root and remembers their sha256 for the manifest."""

    def __init__(self, root):
        self.root = root
        self.hashes = {}

    def write(self, relpath, data):
        path = os.path.join(self.root, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.hashes[relpath.replace(os.sep, "/")] = hashlib.sha256(data).hexdigest()


class _Progress:
    def __init__(self, what, total, verbose):
        self.what, self.total, self.verbose = what, total, verbose
        self.rate = Rate(total)
        self.step = max(1, math.ceil(total / 4))

    def update(self, done):
        if self.verbose and (done % self.step == 0 or done == self.total):
            print(
                f"[demo_data] {self.what}: {done}/{self.total} "
                f"({self.rate.per_second(done):.0f}/s, "
                f"ETA {self.rate.eta(done)})",
                flush=True,
            )


# ----------------------------------------------------------------------------- folder state


def _params(
    seed,
    image_size,
    n_det_trainval,
    n_det_test,
    scene_size,
    max_digits_per_scene,
    cls_val_fraction,
    limit,
    palette_size=PALETTE_SIZE,
    unlabeled_renders=4,
):
    return {
        "palette_size": int(palette_size),
        "unlabeled_renders": int(unlabeled_renders),
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "n_det_trainval": int(n_det_trainval),
        "n_det_test": int(n_det_test),
        "scene_size": [int(s) for s in scene_size],
        "max_digits_per_scene": int(max_digits_per_scene),
        "cls_val_fraction": float(cls_val_fraction),
        "limit": None if limit is None else int(limit),
    }


def _read_manifest(root):
    path = os.path.join(root, MANIFEST_NAME)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (OSError, ValueError):
        return None


def _is_demo_data(path):
    """A folder this generator wrote (finished or half-written)."""
    return os.path.isdir(path) and (
        _read_manifest(path) is not None or os.path.exists(os.path.join(path, INCOMPLETE_MARKER))
    )


def _validate(
    seed,
    image_size,
    n_det_trainval,
    n_det_test,
    scene_size,
    max_digits_per_scene,
    cls_val_fraction,
    limit,
):
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DemoDataError(f"seed must be a non-negative integer, got {seed!r}")
    if image_size < 16:
        raise DemoDataError(
            f"image_size={image_size} is too small to render a digit; use 16 or more (default 64)"
        )
    # Detectron2's load_voc_instances reads the split file with np.loadtxt, which cannot
    # iterate a single line: two scenes per split is the least that loads.
    if n_det_trainval < 2 or n_det_test < 2:
        raise DemoDataError(
            f"n_det_trainval={n_det_trainval}, n_det_test={n_det_test}: each "
            "split needs at least 2 scenes "
            f"(Detectron2's VOC loader cannot read a one-line split file)"
        )
    if len(scene_size) != 2 or min(scene_size) < 64:
        raise DemoDataError(
            f"scene_size={tuple(scene_size)} must be (height, width), each at least 64"
        )
    if max_digits_per_scene < 1:
        raise DemoDataError(f"max_digits_per_scene={max_digits_per_scene} must be at least 1")
    if not 0 < cls_val_fraction < 1:
        raise DemoDataError(
            f"cls_val_fraction={cls_val_fraction} must be strictly between 0 and 1 (default 0.2)"
        )
    if limit is not None and limit < 40:
        raise DemoDataError(
            f"limit={limit} is too small: a stratified split of 10 classes needs at least 40 digits"
        )


def _prepare_out_dir(root, params, force):
    """Decide what to do with ``root``: returns "done" (already generated, same parameters) or
    "write".
    """
    if not os.path.exists(root):
        return "write"
    if not os.path.isdir(root):
        raise DemoDataError(f"--out {root!r} exists and is not a folder; pass another path")
    # Other demo data sets nested inside (the demo keeps each budget's in
    # data/demo_<budget>_s<seed>)
    # are not a user's files: data/ holding only those is as good as empty, and they are kept.
    entries = [e for e in os.listdir(root) if not _is_demo_data(os.path.join(root, e))]
    manifest = _read_manifest(root)
    if manifest is not None and manifest.get("params") == params and not force:
        missing = [
            p for p in manifest.get("files", {}) if not os.path.isfile(os.path.join(root, p))
        ]
        if missing:
            raise DemoDataError(
                f"{root!r} was generated with these parameters but {len(missing)} "
                "files are missing "
                f"(e.g. {missing[0]!r}). Regenerate it with --force (force=True)."
            )
        return "done"
    ours_half_written = INCOMPLETE_MARKER in entries and manifest is None
    if entries and not force and not ours_half_written:
        if manifest is not None:
            old = manifest.get("params", {})
            changed = ", ".join(
                f"{k}: {old.get(k)!r} there, {v!r} asked"
                for k, v in params.items()
                if old.get(k) != v
            )
            why = f"it holds demo data generated with different parameters ({changed})"
        else:
            why = (
                f"it is not empty ({len(entries)} entries, e.g. "
                f"{sorted(entries)[0]!r}) and holds no demo data manifest"
            )
        raise DemoDataError(
            f"refusing to write demo data into {root!r}: {why}. "
            f"Pass an empty or new folder, or --force (force=True) to replace the demo data there "
            f"(only {', '.join(_OWNED[:4])} and {MANIFEST_NAME} are replaced; "
            "other files are kept)."
        )
    for name in _OWNED:
        path = os.path.join(root, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.unlink(path)
    return "write"


def _select_digits(labels, seed, limit):
    """Indices into load_digits: a seeded order interleaved across classes, cut at ``limit``
    (class-balanced).
    """
    rng = _rng(seed, _STREAM_SPLIT, 0)
    order = rng.permutation(len(labels))
    per_class = [list(order[labels[order] == c]) for c in range(len(DIGIT_CLASSES))]
    interleaved = [
        per_class[c][r]
        for r in range(max(map(len, per_class)))
        for c in range(len(per_class))
        if r < len(per_class[c])
    ]
    return np.asarray(interleaved if limit is None else interleaved[:limit])


def _stratified_split(indices, labels, seed, val_fraction):
    rng = _rng(seed, _STREAM_SPLIT, 1)
    train, val = [], []
    for c in range(len(DIGIT_CLASSES)):
        members = indices[labels[indices] == c]
        members = members[rng.permutation(len(members))]
        n_val = min(len(members) - 1, max(1, int(round(val_fraction * len(members)))))
        val.extend(members[:n_val])
        train.extend(members[n_val:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(val))


# ----------------------------------------------------------------------------- entry point


def make_demo_data(
    out_dir,
    seed=0,
    *,
    image_size=64,
    n_det_trainval=300,
    n_det_test=100,
    scene_size=(160, 160),
    max_digits_per_scene=4,
    cls_val_fraction=0.2,
    limit=None,
    palette_size=PALETTE_SIZE,
    unlabeled_renders=4,
    force=False,
    verbose=True,
):
    """Generate the demo data sets under ``out_dir`` (see the module docstring) and return their
    paths.

    ``limit`` caps the number of digit scans used (class-balanced), for tiny test versions.
    ``palette_size`` / ``unlabeled_renders``: see the module docstring.
    A folder already generated with the same parameters is returned as is. A non-empty
    folder is refused unless ``force`` (then only this generator's outputs are replaced);
    a half-written folder of ours (crash mid-generation) is regenerated.
    """
    from sklearn.datasets import load_digits

    _validate(
        seed,
        image_size,
        n_det_trainval,
        n_det_test,
        scene_size,
        max_digits_per_scene,
        cls_val_fraction,
        limit,
    )
    if palette_size < 1 or unlabeled_renders < 1:
        raise DemoDataError(
            f"palette_size={palette_size}, unlabeled_renders={unlabeled_renders}: "
            f"both must be at least 1 (defaults {PALETTE_SIZE} and 4)"
        )
    root = os.path.abspath(os.fspath(out_dir))
    params = _params(
        seed,
        image_size,
        n_det_trainval,
        n_det_test,
        scene_size,
        max_digits_per_scene,
        cls_val_fraction,
        limit,
        palette_size,
        unlabeled_renders,
    )
    paths = demo_data_paths(root)
    if _prepare_out_dir(root, params, force) == "done":
        if verbose:
            print(
                f"[demo_data] {root} already holds demo data with these parameters; nothing to do",
                flush=True,
            )
        return paths

    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, INCOMPLETE_MARKER), "w") as f:
        f.write(
            "demo data generation in progress or interrupted; rerun "
            "tools/make_demo_data.py to regenerate\n"
        )
    start = time.perf_counter()
    writer = _Writer(root)

    digits = load_digits()
    scans, labels = digits.images, digits.target.astype(np.int64)
    chosen = _select_digits(labels, seed, limit)
    train_idx, val_idx = _stratified_split(chosen, labels, seed, cls_val_fraction)
    val_set = set(val_idx.tolist())

    palette = make_palette(seed, palette_size)
    progress = _Progress("digit images", len(chosen), verbose)
    for done, i in enumerate(sorted(chosen.tolist()), start=1):
        # Seeded by the scan's index, so an image is the same whatever ``limit`` selects.
        jpeg = _to_jpeg(render_digit_image(scans[i], palette, seed, i, image_size))
        split = "val" if i in val_set else "train"
        writer.write(
            os.path.join("digits_cls", split, DIGIT_CLASSES[labels[i]], f"digit_{i:05d}.jpg"), jpeg
        )
        progress.update(done)
    progress = _Progress("unlabeled scans", len(train_idx), verbose)
    for done, i in enumerate(train_idx.tolist(), start=1):
        views = render_unlabeled_views(scans[i], palette, seed, i, unlabeled_renders, image_size)
        for r, image in enumerate(views):
            writer.write(
                os.path.join("digits_unlabeled", "train", f"digit_{i:05d}", f"r{r}.jpg"),
                _to_jpeg(image),
            )
        progress.update(done)
    n_unlabeled = len(train_idx) * unlabeled_renders

    voc_rel = os.path.join("VOCdigits", "VOC2007")
    scene_splits = (("trainval", n_det_trainval, train_idx), ("test", n_det_test, val_idx))
    scene_id = 0
    n_objects = {}
    for split_index, (split, count, pool) in enumerate(scene_splits):
        progress = _Progress(f"{split} scenes", count, verbose)
        classes = ClassCycle(_rng(seed, _STREAM_SPLIT, 2 + split_index))
        coco_images, ids = [], []
        for done in range(1, count + 1):
            file_id = f"{scene_id:06d}"
            image, objects = render_scene(
                scans[pool],
                labels[pool],
                palette,
                seed,
                scene_id,
                tuple(scene_size),
                max_digits_per_scene,
                classes,
            )
            height, width = image.shape[:2]
            writer.write(os.path.join(voc_rel, "JPEGImages", f"{file_id}.jpg"), _to_jpeg(image))
            writer.write(
                os.path.join(voc_rel, "Annotations", f"{file_id}.xml"),
                _voc_xml(file_id, width, height, objects),
            )
            coco_images.append((file_id, height, width, objects))
            ids.append(file_id)
            scene_id += 1
            progress.update(done)
        writer.write(
            os.path.join(voc_rel, "ImageSets", "Main", f"{split}.txt"),
            ("\n".join(ids) + "\n").encode(),
        )
        writer.write(
            os.path.join("digits_coco", "annotations", f"instances_{split}.json"),
            _coco_json(split, coco_images),
        )
        n_objects[split] = sum(len(o) for _, _, _, o in coco_images)

    manifest = {
        "generator": "detection.demo.data.make_demo_data",
        "params": params,
        "class_names": list(DIGIT_CLASSES),
        "counts": {
            "digits": int(len(chosen)),
            "cls_train": int(len(train_idx)),
            "cls_val": int(len(val_idx)),
            "unlabeled_train": int(n_unlabeled),
            "det_trainval_images": int(n_det_trainval),
            "det_test_images": int(n_det_test),
            "det_trainval_objects": int(n_objects["trainval"]),
            "det_test_objects": int(n_objects["test"]),
        },
        "files": dict(sorted(writer.hashes.items())),
    }
    # The manifest is written last and atomically: its presence means the folder is complete.
    atomic_write_bytes(
        paths["manifest"], json.dumps(manifest, sort_keys=True, indent=1).encode("utf-8") + b"\n"
    )
    os.unlink(os.path.join(root, INCOMPLETE_MARKER))
    if verbose:
        c = manifest["counts"]
        print(
            f"[demo_data] wrote {len(writer.hashes)} files to {root} in "
            f"{time.perf_counter() - start:.1f} s: "
            f"{c['cls_train']} train / {c['cls_val']} val digit images, "
            f"{c['det_trainval_images']} trainval / {c['det_test_images']} test scenes "
            f"({c['det_trainval_objects']} / {c['det_test_objects']} digits)",
            flush=True,
        )
    return paths
