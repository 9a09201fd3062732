"""Corrupt and unreadable images are skipped, counted and reported, never a crash."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from pretrain.data import UnreadableImageError, build_pretrain_loader, load_rgb
from pretrain.data.fast_augment import FastTwoCropTransform


@pytest.fixture(scope="module")
def folder_with_bad_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    rng = np.random.default_rng(0)
    for i in range(10):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(
            root / f"ok_{i}.jpg"
        )
    data = (root / "ok_0.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "not_an_image.jpg").write_text("this is text, not a JPEG")
    return str(root)


def test_load_rgb_names_the_file(folder_with_bad_files):
    with pytest.raises(UnreadableImageError, match="truncated.jpg"):
        load_rgb(os.path.join(folder_with_bad_files, "truncated.jpg"))


# "fast": the fast pipeline's transform reads the files itself (reduced-size JPEG decode), so
# decoding errors surface inside it and must be handled the same way.
@pytest.mark.parametrize("pipeline", ["reference", "fast"])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_images_are_skipped_counted_and_warned(
    folder_with_bad_files, num_workers, pipeline, caplog
):
    # 12 files, batch 4: every file is requested each epoch (no dropped tail).
    transform = FastTwoCropTransform("v2", 16) if pipeline == "fast" else None
    loader = build_pretrain_loader(
        folder_with_bad_files,
        crop_size=16,
        batch_size=4,
        num_workers=num_workers,
        transform=transform,
    )
    with caplog.at_level(logging.WARNING, logger="pretrain.data"):
        for epoch in range(2):
            loader.set_epoch(epoch)
            batches = list(loader)
            assert len(batches) == 3
            # Bad files are replaced by readable ones: batches stay full.
            assert all(q.shape[0] == 4 for q, _ in batches)
    assert loader.skipped == 4  # 2 bad files x 2 epochs
    text = caplog.text
    assert "truncated.jpg" in text and "not_an_image.jpg" in text
    assert text.count("skipped unreadable image") == 2  # once per file, not per epoch
    assert "epoch 1: skipped 2 unreadable image(s) (4 in total" in text
