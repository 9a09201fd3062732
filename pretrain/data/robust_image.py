"""Opening images that may be corrupt, and reporting the ones we had to skip.

Large crawled datasets always hold a few truncated or mislabelled files. Training must not
die on image 900,001 of an epoch: an unreadable image is skipped, counted, and its path
reported once (by the main process, so workers' reports are not lost).
"""

import io
import logging
import os

from PIL import Image

logger = logging.getLogger("pretrain.data")


class UnreadableImageError(Exception):
    """The file is missing, not an image, or truncated."""


def load_rgb(source, name=None):
    """Decode ``source`` (a path or the file's bytes) fully into an RGB PIL image.

    ``convert`` forces the whole decode, so a truncated JPEG fails here, not later inside
    an augmentation. Raises :class:`UnreadableImageError` naming the file.
    """
    name = name or (source if isinstance(source, (str, os.PathLike)) else "<bytes>")
    try:
        fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
        with Image.open(fp) as im:
            return im.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        # PIL reports bad files as OSError (UnidentifiedImageError, truncation), ValueError
        # or SyntaxError depending on the codec.
        raise UnreadableImageError(f"{os.fspath(name)}: {type(e).__name__}: {e}") from e


class SkipReport:
    """Counts skipped images in the main process and warns once per file."""

    def __init__(self):
        self.total = 0
        self._warned = set()

    def add(self, skipped):
        """``skipped``: iterable of "path: reason" strings sent back with a batch."""
        for item in skipped:
            self.total += 1
            path = item.split(": ", 1)[0]
            if path not in self._warned:
                self._warned.add(path)
                logger.warning("skipped unreadable image %s", item)

    def summary(self, epoch, skipped_this_epoch):
        if skipped_this_epoch:
            logger.warning(
                "epoch %d: skipped %d unreadable image(s) (%d in total so far); "
                "remove or re-encode the files listed above",
                epoch,
                skipped_this_epoch,
                self.total,
            )
