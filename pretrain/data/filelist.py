"""Plain image lists: a text file, one path per line, relative to the list's folder."""

import os

from pretrain.data.folder import HOW_TO_MAKE_DATA, DataPathError, is_image_file


def read_file_list(list_path):
    """Image paths from ``list_path``; blank lines and ``#`` comments are ignored.

    Files are not checked here (a stat per image is slow on network file systems); a
    listed file that is missing is skipped and reported at load time like a corrupt one.
    """
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataPathError(f"file list not found: {list_path!r}.\n  {HOW_TO_MAKE_DATA}")
    reject_image_file(list_path)
    base = os.path.dirname(os.path.abspath(list_path))
    paths = []
    try:
        with open(list_path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    paths.append(line if os.path.isabs(line) else os.path.join(base, line))
    except UnicodeDecodeError as e:
        # An image without an image extension, an archive, or a list in another encoding.
        raise DataPathError(
            _not_a_list(
                list_path,
                f"is not UTF-8 text (it holds byte 0x{e.object[e.start]:02x}), so not a file list",
            )
        ) from e
    if not paths:
        raise DataPathError(
            f"file list {list_path!r} is empty: expected one image path per line, relative "
            f"to the list's folder.\n  {HOW_TO_MAKE_DATA}"
        )
    return paths


def reject_image_file(path):
    """A DataPathError if ``path`` is an image: ``--data photo.jpg`` is a file, but not a list."""
    if is_image_file(os.fspath(path)):
        raise DataPathError(_not_a_list(os.fspath(path), "is an image file, not a file list"))


def _not_a_list(list_path, what):
    folder = os.path.dirname(os.path.abspath(list_path))
    return (
        f"{list_path!r} {what}: pass the folder that holds the images (e.g. {folder!r}), or a "
        f".txt file listing image paths, one per line (UTF-8).\n  {HOW_TO_MAKE_DATA}"
    )
