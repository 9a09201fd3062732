"""WebDataset shards: make_shards (atomic, reproducible, no overwrite) and the streaming loader."""

import glob
import json
import os
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from pretrain.data import DataPathError, build_pretrain_loader
from pretrain.data.shard_writer import make_shards

N = 40


def identity_views(image):
    """Views that reveal which image they came from: its red value (index * 5)."""
    x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)
    return [x, x]


def ids(q):
    return (q[:, 0, 0, 0] / 5).round().long().tolist()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    for i in range(N):  # lossless PNG, so the id survives
        Image.fromarray(np.full((8, 8, 3), (i * 5, 0, 0), dtype=np.uint8)).save(
            root / f"{i:03d}.png"
        )
    return str(root)


@pytest.fixture(scope="module")
def shards(images, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("shards"))
    pattern = make_shards(images, out, maxcount=5)
    return out, pattern


def members(path):
    with tarfile.open(path) as t:
        return [(m.name, t.extractfile(m).read()) for m in t.getmembers()]


def test_make_shards_layout_order_and_no_leftovers(shards, images, tmp_path):
    out, pattern = shards
    assert pattern == os.path.join(out, "train-{000000..000007}.tar")
    assert sorted(os.listdir(out)) == [f"train-{i:06d}.tar" for i in range(8)] + [
        "train-index.json"
    ]
    first = members(os.path.join(out, "train-000000.tar"))
    assert [name for name, _ in first] == [f"{i:09d}.png" for i in range(5)]
    with open(os.path.join(images, "000.png"), "rb") as f:
        assert first[0][1] == f.read()  # original bytes, no re-encode
    again = make_shards(images, str(tmp_path / "again"), maxcount=5)
    for a, b in zip(
        sorted(glob.glob(os.path.join(out, "*.tar"))),
        sorted(glob.glob(str(tmp_path / "again" / "*.tar"))),
    ):
        assert members(a) == members(b)
    assert again.endswith("train-{000000..000007}.tar")


def run_cli(argv):
    """tools/make_shards.py's main(), in this process (a subprocess costs seconds of imports)."""
    from pretrain.cli.make_shards import main

    main(argv)


def _contents(folder):
    return {f: open(os.path.join(folder, f), "rb").read() for f in sorted(os.listdir(folder))}


def test_make_shards_cli_refuses_to_overwrite_without_force(images, tmp_path, capsys):
    out = str(tmp_path / "shards")  # its own copy: the module's shared shards stay as they are
    make_shards(images, out, maxcount=5)
    before = _contents(out)
    with pytest.raises(SystemExit, match="--force"):
        run_cli([images, out, "--maxcount", "10"])
    assert _contents(out) == before  # not a byte rewritten
    run_cli([images, out, "--maxcount", "10", "--force"])
    printed = capsys.readouterr().out
    assert "40/40 images" in printed and "train-{000000..000003}.tar" in printed
    assert sorted(os.listdir(out)) == [f"train-{i:06d}.tar" for i in range(4)] + [
        "train-index.json"
    ]


def test_missing_and_unreadable_listed_files_are_skipped_warned_and_counted(
    images, tmp_path, capsys
):
    # A file list with one missing file and one entry that cannot be read (a folder): the
    # other 3 images are packed, each bad path is named, and the total is reported.
    listed = ["000.png", "gone.png", "001.png", "a_folder.png", "002.png"]
    (tmp_path / "a_folder.png").mkdir()
    for name in ("000.png", "001.png", "002.png"):
        with open(os.path.join(images, name), "rb") as f:
            (tmp_path / name).write_bytes(f.read())
    (tmp_path / "list.txt").write_text("\n".join(listed) + "\n")
    out = str(tmp_path / "out")
    run_cli([str(tmp_path / "list.txt"), out, "--maxcount", "2"])
    printed = capsys.readouterr().out
    assert "gone.png" in printed and "No such file" in printed and "a_folder.png" in printed
    assert "skipped 2 of 5 file(s)" in printed and "wrote 3 images" in printed
    samples = [m for tar in sorted(glob.glob(os.path.join(out, "*.tar"))) for m in members(tar)]
    # keys stay contiguous
    assert [name for name, _ in samples] == [f"{i:09d}.png" for i in range(3)]
    assert [data for _, data in samples] == [
        (tmp_path / n).read_bytes() for n in ("000.png", "001.png", "002.png")
    ]
    index = json.load(open(os.path.join(out, "train-index.json")))
    assert index["num_samples"] == 3 and index["skipped_files"] == 2
    loader = build_pretrain_loader(out, batch_size=3, num_workers=0, transform=identity_views)
    assert loader.num_samples == 3  # the epoch size counts what was written, not what was listed
    (tmp_path / "none.txt").write_text("gone.png\n")
    with pytest.raises(SystemExit, match="none of the 1 files"):
        run_cli([str(tmp_path / "none.txt"), str(tmp_path / "out2")])


def epoch(loader, e, start_iter=0):
    loader.set_epoch(e, start_iter)
    return [q for q, _ in loader]


def test_shard_loader_length_shapes_and_resume(shards):
    out, pattern = shards
    loader = build_pretrain_loader(
        pattern, batch_size=4, num_workers=2, transform=identity_views, seed=1
    )
    assert loader.kind == "shards" and len(loader) == N // 4  # from the index, no scan
    full = epoch(loader, 0)
    assert len(full) == 10 and all(q.shape == (4, 3, 8, 8) for q in full)
    resumed = epoch(loader, 0, start_iter=3)
    assert [ids(q) for q in resumed] == [ids(q) for q in full[3:]]
    assert [ids(q) for q in epoch(loader, 1)] != [ids(q) for q in full]
    # Real augmentations through the folder form of the path.
    real = build_pretrain_loader(
        out, crop_size=16, batch_size=8, num_workers=0, samples_per_epoch=16
    )
    assert len(real) == 2
    q, k = next(iter(real))
    assert q.shape == k.shape == (8, 3, 16, 16) and not torch.equal(q, k)


def test_ranks_and_workers_read_disjoint_shards(shards):
    _, pattern = shards
    seen = {}
    for rank in (0, 1):
        loader = build_pretrain_loader(
            pattern,
            batch_size=5,
            num_workers=2,
            rank=rank,
            world_size=2,
            transform=identity_views,
            samples_per_epoch=80,
        )
        assert len(loader) == 8
        seen[rank] = {i for q in epoch(loader, 0) for i in ids(q)}
    shard_of = lambda i: i // 5  # noqa: E731
    # 8 shards over 2 ranks x 2 workers: rank 0 streams own shards {0,4} and {1,5}.
    assert {shard_of(i) for i in seen[0]} <= {0, 1, 4, 5}
    assert {shard_of(i) for i in seen[1]} <= {2, 3, 6, 7}
    assert len(seen[0]) > 5 and len(seen[1]) > 5


def shards_with_a_corrupt_sample(tmp_path, images):
    """One shard: 7 good images (ids 0..6) and "zz_bad.png", which is not an image."""
    src = tmp_path / "src"
    src.mkdir()
    for f in sorted(os.listdir(images))[:7]:
        (src / f).write_bytes(open(os.path.join(images, f), "rb").read())
    (src / "zz_bad.png").write_bytes(b"not a png")
    return make_shards(str(src), str(tmp_path / "out"), maxcount=100)


def test_corrupt_sample_in_a_shard_is_skipped_and_counted(tmp_path, images, caplog):
    pattern = shards_with_a_corrupt_sample(tmp_path, images)
    loader = build_pretrain_loader(
        pattern, batch_size=7, num_workers=0, transform=identity_views, samples_per_epoch=7
    )
    with caplog.at_level("WARNING", logger="pretrain.data"):
        for e in range(3):
            (q,) = epoch(loader, e)
            assert q.shape[0] == 7  # full batch despite the bad sample
    assert loader.skipped >= 1 and "000000007.png" in caplog.text


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_fast_transform_reads_shard_bytes_and_skips_corrupt_ones(tmp_path, images, decode):
    from pretrain.data.fast_augment import FastTwoCropTransform, decode_two_crops_on_device

    pattern = shards_with_a_corrupt_sample(tmp_path, images)
    transform = FastTwoCropTransform("v2", 16, decode=decode)
    loader = build_pretrain_loader(
        pattern, batch_size=7, num_workers=0, transform=transform, samples_per_epoch=7
    )
    for e in range(3):
        loader.set_epoch(e)
        ((a, b),) = list(loader)
        if decode == "device":  # the worker sent bytes and crop boxes; the training process decodes
            assert isinstance(a, list) and len(a) == 7 and b.shape == (7, 2, 5)
            # shard and key, for a warning if undecodable
            assert all(".tar:" in name for _, name in a)
            a, b, failed = decode_two_crops_on_device(a, b, 16, "cpu")
            assert failed == []
        # full despite the bad one
        assert a.dtype == torch.uint8 and a.shape == b.shape == (7, 3, 16, 16)
        assert set(ids(a.float())) <= set(range(7)) and ids(a.float()) == ids(b.float())
    assert loader.skipped >= 1


def test_shard_errors_are_clear(tmp_path, images):
    with pytest.raises(DataPathError, match="do not exist"):
        build_pretrain_loader(
            str(tmp_path / "train-{000000..000003}.tar"), batch_size=2, num_workers=0
        )
    out = tmp_path / "noindex"
    make_shards(images, str(out), maxcount=20)
    os.remove(out / "train-index.json")
    with pytest.raises(ValueError, match="samples_per_epoch"):
        build_pretrain_loader(str(out), batch_size=2, num_workers=0)
