"""Pack an image folder or file list into WebDataset tar shards (tools/make_shards.py).

Images are stored as their original bytes (no re-encode), in sorted-path order, keys
``000000000``...; an index file records each shard's sample count so the loader knows
the epoch size without scanning. Shards are written under temporary names and renamed
only when all are complete: an interrupted run leaves no half set of shards.
"""

import json
import os
import re
import shutil
import sys

import webdataset as wds

from pretrain.data.filelist import read_file_list
from pretrain.data.folder import scan_image_folder
from pretrain.data.shards import INDEX_SUFFIX
from pretrain.meters import Rate

_SIZE = re.compile(r"^\s*([0-9.]+(?:e[0-9]+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(text):
    """ "3G", "500MB", "1e9" -> bytes."""
    if isinstance(text, (int, float)):
        return int(text)
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"cannot read size {text!r}; write e.g. 500M or 3G")
    unit = m.group(2).lower()
    return int(float(m.group(1)) * (1024 ** ("kmgt".index(unit) + 1) if unit else 1))


def make_shards(src, out, *, prefix="train", maxcount=1000, maxsize="1G", force=False, log=None):
    """Write ``OUT/{prefix}-NNNNNN.tar`` from ``src`` (a folder or a file list).

    Returns the brace pattern to pass to the loader, e.g. ``OUT/train-{000000..000012}.tar``.
    Refuses to replace existing shards of the same prefix unless ``force``. A listed file that
    is missing or unreadable is skipped with a warning naming it; the total is printed at the
    end and stored as ``skipped_files`` in the index file.
    """
    src, out = os.fspath(src), os.fspath(out)
    log = log or sys.stdout
    paths = read_file_list(src) if os.path.isfile(src) else scan_image_folder(src)
    existing = (
        [f for f in os.listdir(out) if f.startswith(prefix + "-")] if os.path.isdir(out) else []
    )
    if existing and not force:
        raise FileExistsError(
            f"{out!r} already holds {len(existing)} '{prefix}-*' file(s); "
            f"pass --force to replace them or choose another OUT/--prefix"
        )
    os.makedirs(out, exist_ok=True)
    tmp = os.path.join(out, f".{prefix}-partial-{os.getpid()}")
    os.makedirs(tmp)
    counts, skipped, written, rate = {}, 0, 0, Rate(len(paths))
    try:
        writer = wds.ShardWriter(
            os.path.join(tmp, f"{prefix}-%06d.tar"),
            maxcount=maxcount,
            maxsize=parse_size(maxsize),
            verbose=0,
        )
        with writer:
            for i, path in enumerate(paths):
                data = _read_or_warn(path, log)
                if data is None:
                    skipped += 1
                else:
                    ext = os.path.splitext(path)[1].lower().lstrip(".") or "jpg"
                    # Keys count written samples, so they stay contiguous past a skipped file.
                    writer.write({"__key__": f"{written:09d}", ext: data})
                    written += 1
                    name = os.path.basename(writer.fname)
                    counts[name] = counts.get(name, 0) + 1
                if (i + 1) % 1000 == 0 or i + 1 == len(paths):
                    print(
                        f"[make_shards] {i + 1}/{len(paths)} images, {len(counts)} shard(s), "
                        f"{rate.per_second(i + 1):.0f} img/s, ETA {rate.eta(i + 1)}",
                        file=log,
                        flush=True,
                    )
        if not counts:
            raise FileNotFoundError(
                f"none of the {len(paths)} files of {src!r} could be read (first: "
                f"{paths[0]!r}); check the paths"
            )
        index = {
            "source": os.path.abspath(src),
            "num_samples": written,
            "skipped_files": skipped,
            "shard_counts": counts,
        }
        with open(os.path.join(tmp, prefix + INDEX_SUFFIX), "w") as f:
            json.dump(index, f, indent=1)
        for name in existing:  # only reached with force
            full = os.path.join(out, name)
            shutil.rmtree(full) if os.path.isdir(full) else os.unlink(full)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n = len(counts)
    pattern = os.path.join(
        out, f"{prefix}-{{{0:06d}..{n - 1:06d}}}.tar" if n > 1 else f"{prefix}-000000.tar"
    )
    print(f"[make_shards] wrote {written} images in {n} shard(s): {pattern}", file=log, flush=True)
    if skipped:
        print(
            f"[make_shards] skipped {skipped} of {len(paths)} file(s) that "
            "could not be read (each "
            "named above; the count is also skipped_files in "
            f"{prefix}{INDEX_SUFFIX})",
            file=log,
            flush=True,
        )
    return pattern


def _read_or_warn(path, log):
    """The file's bytes, or None (with a warning naming it) if it is missing or unreadable.

    Like the loaders (see filelist.py), one bad entry of a million-line list must not abort
    the packing: it is skipped, reported, and counted in the summary and the index file.
    """
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        print(f"[make_shards] warning: skipped {path!r}: {e.strerror or e}", file=log, flush=True)
        return None
