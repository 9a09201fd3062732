"""build_pretrain_loader on folders and file lists: interface, seeding, ranks, resume, errors."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import DataPathError, build_labeled_loader, build_pretrain_loader, resolve_kind


def write_images(folder, n, size=(20, 24), seed=0):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = os.path.join(folder, f"img_{i:03d}.jpg" if i % 2 else f"img_{i:03d}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("unlabeled")
    write_images(root / "a", 7)
    write_images(root / "b" / "nested", 5, seed=1)  # recursive scan
    (root / "b" / "notes.txt").write_text("not an image")
    return str(root)


def epoch_batches(loader, epoch, start_iter=0):
    loader.set_epoch(epoch, start_iter)
    return [(q.clone(), k.clone()) for q, k in loader]


def test_folder_loader_interface(folder):
    loader = build_pretrain_loader(folder, aug="v1", crop_size=16, batch_size=4, num_workers=0)
    assert loader.kind == "folder" and loader.num_samples == 12
    assert len(loader) == 3
    batches = epoch_batches(loader, 0)
    assert len(batches) == 3
    for q, k in batches:
        assert q.shape == k.shape == (4, 3, 16, 16) and q.dtype == torch.float32
        assert not torch.equal(q, k)
    assert loader.skipped == 0


def test_same_sample_same_crops_across_workers_resume_and_ranks(folder):
    kw = dict(crop_size=16, seed=3)
    # Reference: one image per batch on one process gives each index's crops.
    single = build_pretrain_loader(folder, batch_size=1, num_workers=0, **kw)
    order = single._epoch_source.rank_indices(2)
    by_index = {i: b for i, b in zip(order, epoch_batches(single, 2))}
    assert sorted(by_index) == list(range(12))

    with_workers = build_pretrain_loader(folder, batch_size=3, num_workers=2, **kw)
    full = epoch_batches(with_workers, 2)
    resumed = epoch_batches(with_workers, 2, start_iter=2)
    assert len(full) == 4 and len(resumed) == 2
    for a, b in zip(full[2:], resumed):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    flat_q = torch.cat([q for q, _ in full])
    for pos, i in enumerate(order):
        assert torch.equal(flat_q[pos], by_index[i][0][0])

    # Two ranks: disjoint halves of the epoch; every sample's crops as on one process.
    seen = []
    for rank in (0, 1):
        loader = build_pretrain_loader(
            folder, batch_size=2, num_workers=2 * rank, rank=rank, world_size=2, **kw
        )
        idx = loader._epoch_source.rank_indices(2)
        q = torch.cat([q for q, _ in epoch_batches(loader, 2)])
        for pos, i in enumerate(idx):
            assert torch.equal(q[pos], by_index[i][0][0])
        seen += idx
    assert sorted(seen) == list(range(12))


def test_epochs_differ_and_samples_per_epoch_sets_length(folder):
    loader = build_pretrain_loader(
        folder, crop_size=16, batch_size=4, num_workers=0, samples_per_epoch=20
    )
    assert len(loader) == 5
    e0, e1 = epoch_batches(loader, 0), epoch_batches(loader, 1)
    assert len(e0) == 5 and not torch.equal(e0[0][0], e1[0][0])


def test_file_list_relative_to_its_folder(folder, tmp_path):
    listed = sorted(
        os.path.relpath(os.path.join(folder, "a", f), tmp_path)
        for f in os.listdir(os.path.join(folder, "a"))
    )
    lst = tmp_path / "train.txt"
    lst.write_text("# images\n" + "\n".join(listed) + "\n\n")
    assert resolve_kind(str(lst)) == "filelist"
    loader = build_pretrain_loader(str(lst), crop_size=16, batch_size=7, num_workers=0)
    assert loader.num_samples == 7 and len(loader) == 1
    ((q, k),) = epoch_batches(loader, 0)
    assert q.shape == (7, 3, 16, 16)


def test_missing_or_empty_path_says_what_and_how(tmp_path):
    with pytest.raises(DataPathError, match="(?s)not found.*make_demo_data.py"):
        build_pretrain_loader(str(tmp_path / "nope"), batch_size=2, num_workers=0)
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(DataPathError, match="(?s)no images.*make_shards.py"):
        build_pretrain_loader(str(tmp_path / "empty"), batch_size=2, num_workers=0)
    (tmp_path / "list.txt").write_text("\n# nothing\n")
    with pytest.raises(DataPathError, match="empty"):
        build_pretrain_loader(str(tmp_path / "list.txt"), batch_size=2, num_workers=0)


def test_too_few_images_for_a_batch_is_a_clear_error(folder):
    with pytest.raises(ValueError, match="no full batch"):
        build_pretrain_loader(folder, batch_size=7, num_workers=0, world_size=2)


def test_labeled_loader_train_and_eval(tmp_path):
    for c in ("cat", "dog"):
        write_images(tmp_path / "train" / c, 3, size=(30, 40))
    train = build_labeled_loader(str(tmp_path / "train"), image_size=16, batch_size=4, train=True)
    evaluation = build_labeled_loader(
        str(tmp_path / "train"), image_size=16, batch_size=4, train=False
    )
    assert train.dataset.classes == ["cat", "dog"]
    x, y = next(iter(evaluation))
    assert x.shape == (4, 3, 16, 16) and y.tolist() == [0, 0, 0, 1]
    # Eval is deterministic (resize + center crop), train is augmented.
    x2, _ = next(iter(evaluation))
    assert torch.equal(x, x2)
    assert sum(len(y) for _, y in train) == 6
    with pytest.raises(DataPathError, match="class"):
        build_labeled_loader(str(tmp_path / "missing"), image_size=16, batch_size=4, train=False)


def test_a_single_image_or_binary_file_is_not_taken_for_a_file_list(tmp_path):
    from pretrain.data import read_file_list

    image = write_images(tmp_path / "one", 1)[0]  # img_000.png
    for call in (
        lambda: build_pretrain_loader(image, batch_size=1, num_workers=0),
        lambda: resolve_kind(image),
        lambda: read_file_list(image),
    ):
        with pytest.raises(
            DataPathError, match=r"is an image file, not a file list: pass the folder that holds"
        ):
            call()
    # An image without an image extension is read as a list and fails to decode: name the file.
    binary = tmp_path / "photo_without_extension"
    binary.write_bytes(open(image, "rb").read())
    with pytest.raises(
        DataPathError, match=r"photo_without_extension.*not UTF-8 text.*not a file list"
    ):
        build_pretrain_loader(str(binary), batch_size=1, num_workers=0)
