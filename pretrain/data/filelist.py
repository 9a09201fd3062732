"""Plain image lists: a text file, one path per line, relative to the list's folder."""
import os

from .folder import HOW_TO_MAKE_DATA, DataPathError


def read_file_list(list_path):
    """Image paths from ``list_path``; blank lines and ``#`` comments are ignored.

    Files are not checked here (a stat per image is slow on network file systems); a
    listed file that is missing is skipped and reported at load time like a corrupt one.
    """
    list_path = os.fspath(list_path)
    if not os.path.isfile(list_path):
        raise DataPathError(f"file list not found: {list_path!r}.\n  {HOW_TO_MAKE_DATA}")
    base = os.path.dirname(os.path.abspath(list_path))
    paths = []
    with open(list_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if os.path.isabs(line) else os.path.join(base, line))
    if not paths:
        raise DataPathError(
            f"file list {list_path!r} is empty: expected one image path per line, relative "
            f"to the list's folder.\n  {HOW_TO_MAKE_DATA}")
    return paths
