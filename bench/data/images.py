"""Image files -> uint8 RGB pixels, with Pillow: headers, decoding, the arrays of a folder.

JPEG, PNG, BMP, GIF (first frame) and WebP; EXIF orientation applied; grayscale, palette, RGBA
and CMYK converted to RGB. Pillow's decompression-bomb limit is the rule for an image too large
to decode safely, and an error here, not a warning. Images of one size (no larger than the
stored size) are kept exactly as decoded; images of several sizes, or larger, are decoded a
batch at a time and brought to one stored size
with the lesson's resize_with_pad (bilinear), rounded to uint8 (bench.engine.decode), into one
preallocated array: memory is that array plus one batch of decoded images.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from bench.data.dataset import DataError, Dataset, from_arrays

FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP")
# Images decoded (and resized) together, at most: memory beyond the stored array is one batch
# whatever the images' pixel count (a batch of large photos is cut short by its bytes).
BATCH = 64
BATCH_BYTES = 256 * 2**20
_ORIENTATION = 0x0112  # EXIF tag; values 5-8 turn the image by 90 degrees
_QUARTER_TURNS = (5, 6, 7, 8)


class BadImageError(DataError):
    """A corrupt, truncated or unidentifiable image: what --skip-bad-images skips."""


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Image.Image]:
    """The image at `path`, opened by Pillow; every failure, while open or while decoding in
    the block, is a DataError naming the file."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=FORMATS) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise DataError(f"{path}: expected an image small enough to decode safely (Pillow's "
                        f"limit: {Image.MAX_IMAGE_PIXELS:,} pixels); received {err}") from err
    except PermissionError as err:
        raise DataError(f"{path}: expected a readable image file; received permission "
                        "denied") from err
    except UnidentifiedImageError as err:
        raise BadImageError(f"{path}: expected a JPEG, PNG, BMP, GIF or WebP image; received "
                            "a file Pillow cannot identify (corrupt or not an image)") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(f"{path}: expected a readable image; received a corrupt or "
                            f"truncated file ({err})") from err


def scan_sizes(root: Path, files: Sequence[str], skip_bad_images: bool = False
               ) -> set[tuple[int, int]]:
    """(width, height) of each image as it will be decoded, read from the headers alone; a
    decompression bomb or an unreadable file is refused here, before anything is decoded."""
    sizes = set()
    for rel in files:
        try:
            with opened(root / rel) as img:
                sizes.add(_upright_size(img))
        except BadImageError:
            if not skip_bad_images:
                raise
    return sizes


def _upright_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    # Only JPEG and WebP give their EXIF without decoding; Pillow reads a PNG's to the end.
    exif = img.getexif() if img.format in ("JPEG", "WEBP") else {}
    return (height, width) if exif.get(_ORIENTATION) in _QUARTER_TURNS else (width, height)


def decode(path: Path) -> np.ndarray:
    """The image at `path` as uint8 RGB, H x W x 3, upright: its first frame, EXIF applied."""
    with opened(path) as img:
        img.seek(0)
        upright = ImageOps.exif_transpose(img)
        if upright.mode == "P" and "transparency" in upright.info:
            upright = upright.convert("RGBA")  # Pillow's own advice for such palettes
        return np.asarray(upright.convert("RGB"), dtype=np.uint8)


def decode_listing(listing, size: tuple[int, int], skip_bad_images: bool, identity: str,
                   log: Callable[[str], None]) -> Dataset:
    """The listed images decoded into one uint8 array of `size` (width, height), checked as
    from_arrays checks arrays; corrupt ones skipped and named when `skip_bad_images`."""
    files = listing.train + listing.val
    width, height = size
    out = np.empty((len(files), height, width, 3), dtype=np.uint8)
    keep = np.ones(len(files), dtype=bool)
    skipped: list[str] = []
    batch: list[tuple[int, np.ndarray]] = []
    for i, (rel, _) in enumerate(files):
        try:
            batch.append((i, decode(listing.root / rel)))
        except BadImageError as err:
            if not skip_bad_images:
                raise
            keep[i] = False
            skipped.append(rel)
            log(f"bench: warning: skipped (--skip-bad-images): {err}")
        if len(batch) == BATCH or sum(p.nbytes for _, p in batch) > BATCH_BYTES:
            _store(out, batch)
            batch = []
    _store(out, batch)
    labels = np.array([label for _, label in files], dtype=np.int64)
    n_train = len(listing.train)
    if skipped:
        log(f"Data: {len(skipped)} corrupt images skipped (--skip-bad-images)")
        out, labels, n_train = out[keep], labels[keep], int(keep[:n_train].sum())
    return from_arrays(out[:n_train], labels[:n_train], out[n_train:], labels[n_train:],
                       class_names=listing.class_names, source=str(listing.root), kind="folder",
                       skipped_images=skipped, identity=identity)


def _store(out: np.ndarray, batch: list[tuple[int, np.ndarray]]) -> None:
    """Images of the stored size go in as decoded; the others through resize_with_pad (an image
    already of that size would come out of it unchanged)."""
    other = []
    for i, pixels in batch:
        if pixels.shape == out.shape[1:]:
            out[i] = pixels
        else:
            other.append((i, pixels))
    if other:
        from bench.engine.quiet import import_tensorflow

        import_tensorflow()
        from bench.engine.decode import resize_into

        resize_into(out, other)
