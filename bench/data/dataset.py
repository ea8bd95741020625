"""A dataset as bench uses it, whatever its source: the Dataset types, DataError, and the checks
that turn four arrays into one (the bottom of bench.data: it imports no other part of it).

Every problem a user can cause is a :class:`DataError` whose message is one line saying what was
expected and what was received.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

_IMAGES_SHAPE = "images N×H×W×3 (or N×H×W / N×H×W×1 grayscale)"
_ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
# The names each array is hashed under in a data checksum, and so in every config hash and
# feature key: renaming one would orphan every result and cached feature on users' disks.
_CHECKSUM_NAMES = ("train_images", "train_labels", "val_images", "val_labels")
_Note = Callable[[str, str], None]  # note(text, array name): record a change for Dataset.notes


class DataError(ValueError):
    """A user-facing data problem; str(err) is ONE line naming what was expected and received."""

    def __init__(self, message: str) -> None:
        # One line, whatever a wrapped exception brought along: the CLI prints it as is.
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """Validated train/validation arrays: images N×H×W×3 on the 0–255 scale, labels int64."""

    train_images: np.ndarray  # uint8 when the source was integer-typed, else float32
    train_labels: np.ndarray  # int64, shape (N,)
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple[str, ...]
    source: str  # the folder, as given
    notes: tuple[str, ...] = ()  # what the loader changed and the user should know
    kind: str = "npy"  # "npy" | "folder" | "tfds" | "arrays"
    skipped_images: tuple[str, ...] = ()  # corrupt images left out (--skip-bad-images)
    # the source's own identity when the arrays are a decoded copy of it (an image folder's
    # files, a TFDS dataset's prepared files); None: the arrays are the identity
    identity: str | None = None

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def n_train(self) -> int:
        return len(self.train_labels)

    @property
    def n_test(self) -> int:
        return len(self.test_labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.train_images.shape[1:]
        return (int(height), int(width), int(channels))

    def checksum(self) -> str:
        """The data's identity: the source's when it has one, else sha256 over the four arrays'
        shape, dtype and bytes."""
        if self.identity is not None:
            return self.identity
        return arrays_checksum(self)

    def source_fields(self) -> dict:
        """A row's fields saying where its data came from: the source as given, its kind, the
        images left out as corrupt."""
        return dict(data=self.source, data_kind=self.kind,
                    skipped_images=list(self.skipped_images))

    def __repr__(self) -> str:  # the dataclass default would print every pixel
        return (
            f"Dataset(source={self.source!r}, kind={self.kind!r}, n_train={self.n_train}, "
            f"n_test={self.n_test}, image_shape={self.image_shape}, "
            f"dtype={self.train_images.dtype}, n_classes={self.n_classes}, "
            f"notes={self.notes!r})"
        )


def arrays_checksum(data: Dataset) -> str:
    """sha256 over the four arrays' shape, dtype and bytes."""
    digest = hashlib.sha256()
    arrays = (data.train_images, data.train_labels, data.test_images, data.test_labels)
    for name, arr in zip(_CHECKSUM_NAMES, arrays, strict=True):
        digest.update(f"{name}:{arr.shape}:{arr.dtype.str};".encode())
        digest.update(np.ascontiguousarray(arr).data)
    return digest.hexdigest()


class LazyDataset(Dataset):
    """A Dataset whose arrays are made on first use (an image folder decoded, a TFDS dataset
    read). Its identity, class names and stored image shape are known before, so a sweep with
    nothing left to run decodes nothing."""

    def __init__(self, make: Callable[[], Dataset], *, identity: str, class_names: Sequence[str],
                 source: str, kind: str, image_shape: tuple[int, int, int],
                 counts: tuple[int, int], notes: Sequence[str] = ()) -> None:
        for name, value in (("_make", make), ("identity", identity), ("source", source),
                            ("class_names", tuple(class_names)), ("kind", kind),
                            ("_image_shape", image_shape), ("_counts", counts),
                            ("notes", tuple(notes))):
            object.__setattr__(self, name, value)

    @cached_property
    def loaded(self) -> Dataset:
        """The arrays, checked as from_arrays checks them (decoded now, once)."""
        return self._make()

    train_images = property(lambda self: self.loaded.train_images)
    train_labels = property(lambda self: self.loaded.train_labels)
    test_images = property(lambda self: self.loaded.test_images)
    test_labels = property(lambda self: self.loaded.test_labels)
    skipped_images = property(lambda self: self.loaded.skipped_images)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._image_shape

    @property
    def decoded(self) -> bool:
        return "loaded" in self.__dict__

    @property
    def n_train(self) -> int:  # the files listed until they are decoded (bad ones may go)
        return len(self.train_labels) if self.decoded else self._counts[0]

    @property
    def n_test(self) -> int:
        return len(self.test_labels) if self.decoded else self._counts[1]

    def __repr__(self) -> str:
        state = "decoded" if self.decoded else "not decoded yet"
        return (f"LazyDataset(source={self.source!r}, kind={self.kind!r}, "
                f"image_shape={self.image_shape}, n_classes={self.n_classes}, {state})")


def from_arrays(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    source: str = "<arrays>",
    kind: str = "arrays",
    skipped_images: Sequence[str] = (),
    identity: str | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from in-memory arrays, checked and normalised as files are."""
    if class_names is not None:
        class_names = tuple(str(c) for c in class_names)
    return build_dataset(
        train_images,
        train_labels,
        test_images,
        test_labels,
        names=_ARRAY_NAMES,
        class_names=(class_names, "class_names") if class_names is not None else None,
        default_names=None,
        source=source,
        kind=kind,
        skipped_images=tuple(skipped_images),
        identity=identity,
    )


def build_dataset(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    names: Sequence[str],
    class_names: tuple[tuple[str, ...], str] | None,
    default_names: tuple[str, ...] | None,
    source: str,
    **provenance: object,
) -> Dataset:
    """Check and normalise the four arrays; ``names`` label them in messages."""
    ti_name, tl_name, vi_name, vl_name = names
    notes: dict[str, list[str]] = {}

    def note(text: str, name: str) -> None:
        notes.setdefault(text, []).append(name)

    timg, vimg = _check_image_pair(ti_name, train_images, vi_name, test_images, note)
    tlab = _check_labels(tl_name, train_labels, len(timg), ti_name, note)
    vlab = _check_labels(vl_name, test_labels, len(vimg), vi_name, note)
    n_classes = _check_classes(tl_name, tlab, vl_name, vlab)
    return Dataset(
        train_images=_frozen(timg),
        train_labels=_frozen(tlab),
        test_images=_frozen(vimg),
        test_labels=_frozen(vlab),
        class_names=_class_names(class_names, default_names, n_classes),
        source=source,
        notes=tuple(f"{text} ({', '.join(where)})" for text, where in notes.items()),
        **provenance,
    )


def _check_image_pair(ti_name: str, train_images: object, vi_name: str, test_images: object,
                      note: _Note) -> tuple[np.ndarray, np.ndarray]:
    """Both splits checked, on one scale (0-255) and one dtype, with the same image size."""
    timg, t_unit = _check_images(ti_name, train_images, note)
    vimg, v_unit = _check_images(vi_name, test_images, note)
    if t_unit and not v_unit:
        raise DataError(f"{vi_name}: expected pixels in 0-1 like {ti_name}; received values "
                        "above 1 (0-255 scale)")
    if v_unit and not t_unit:
        raise DataError(f"{vi_name}: expected pixels in 0-255 like {ti_name}; received floats "
                        "all within 0-1")
    if t_unit:
        # The lesson's models take 0-255 input; every backbone's preprocessing expects it.
        timg, vimg = timg * np.float32(255), vimg * np.float32(255)
        note("float pixels in 0-1 detected; scaled to 0-255", f"{ti_name}, {vi_name}")
    if timg.dtype != vimg.dtype:  # one split integer, the other float: same dtype for both
        timg, vimg = timg.astype(np.float32), vimg.astype(np.float32)
    if timg.shape[1:] != vimg.shape[1:]:
        raise DataError(f"{vi_name}: expected images of the same size as {ti_name} "
                        f"({_hw(timg)}); received {_hw(vimg)}")
    return timg, vimg


def _check_classes(tl_name: str, tlab: np.ndarray, vl_name: str, vlab: np.ndarray) -> int:
    """The number of classes: every one has training images, validation stays within them."""
    n_classes = int(tlab.max()) + 1
    counts = np.bincount(tlab, minlength=n_classes)
    empty = np.flatnonzero(counts == 0)
    if empty.size:
        verb = "has" if empty.size == 1 else "have"
        raise DataError(f"{tl_name}: expected every class 0..{n_classes - 1} to have training "
                        f"images; class {_first_few(empty)} {verb} no training images")
    for name, lab in ((tl_name, tlab), (vl_name, vlab)):
        present = np.unique(lab)
        if present.size < 2:
            raise DataError(f"{name}: expected at least 2 classes; received only class "
                            f"{present[0]} ({lab.size} labels)")
    outside = np.unique(vlab[vlab >= n_classes])
    if outside.size:
        raise DataError(f"{vl_name}: expected labels within the training classes "
                        f"0..{n_classes - 1}; received {_first_few(outside)}")
    return n_classes


def _first_few(values: np.ndarray) -> str:
    return ", ".join(str(c) for c in values[:5]) + (", ..." if values.size > 5 else "")


def _class_names(given: tuple[tuple[str, ...], str] | None,
                 default_names: tuple[str, ...] | None, n_classes: int) -> tuple[str, ...]:
    """The names given (checked against the labels), else the default's, else class_<i>."""
    if given is not None:
        names, origin = given
        if len(names) != n_classes:
            raise DataError(f"{origin}: expected {n_classes} class names (labels 0.."
                            f"{n_classes - 1}); received {len(names)}")
        return names
    if default_names is not None and len(default_names) == n_classes:
        return default_names
    return tuple(f"class_{i}" for i in range(n_classes))


def _frozen(arr: np.ndarray) -> np.ndarray:
    """A read-only view: the checksum is the data's identity, so the Dataset must not change.

    A view, so that an array the caller passed to from_arrays stays writable for them.
    """
    view = arr.view()
    view.flags.writeable = False
    return view


def _hw(images: np.ndarray) -> str:
    return f"{images.shape[1]}×{images.shape[2]}"


def _as_array(name: str, value: object) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise DataError(f"{name}: expected a rectangular numeric array; received a ragged "
                        "nested sequence") from err
    if arr.dtype == object:
        raise DataError(f"{name}: expected a numeric array; received an object array "
                        "(object arrays are refused (allow_pickle=False))")
    return arr


def _check_images(name: str, value: object, note: _Note) -> tuple[np.ndarray, bool]:
    """Shape, dtype and range checks; returns the images N×H×W×3 and whether they are 0-1."""
    arr = _as_array(name, value)
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{name}: expected integer or float pixels; received dtype {arr.dtype}")
    if arr.ndim == 3:
        arr = arr[..., np.newaxis]
    elif arr.ndim != 4:
        raise DataError(f"{name}: expected {_IMAGES_SHAPE}; received shape {arr.shape}")
    if arr.shape[-1] not in (1, 3):
        hint = " (channels-first? expected channels last)" if arr.shape[1] in (1, 3) else ""
        raise DataError(f"{name}: expected 1 or 3 channels (last axis); received "
                        f"{arr.shape[-1]} in shape {arr.shape}{hint}")
    if arr.shape[0] == 0:
        raise DataError(f"{name}: expected at least one image; received an empty split "
                        f"(shape {arr.shape})")
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise DataError(f"{name}: expected {_IMAGES_SHAPE} with H, W >= 1; received shape "
                        f"{arr.shape}")

    unit = False
    if arr.dtype.kind == "f":
        arr = arr.astype(np.float32, copy=False)
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        if bad:
            raise DataError(f"{name}: expected finite pixel values; received {bad} NaN or inf "
                            "values")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{name}: expected pixels in 0-255 (or 0-1 floats); received "
                            f"range {lo:g} to {hi:g}")
        unit = hi <= 1.0
    else:
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"{name}: expected integer pixels in 0-255; received range "
                            f"{lo} to {hi}")
        arr = arr.astype(np.uint8, copy=False)

    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
        note("grayscale images repeated to 3 channels", name)
    return arr, unit


def _check_labels(
    name: str, value: object, n_images: int, images_name: str, note: _Note
) -> np.ndarray:
    """Integer class indices of shape (N,); float labels only when exactly integral."""
    arr = _as_array(name, value)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    elif arr.ndim != 1:
        hint = " (one-hot? expected class indices)" if arr.ndim == 2 else ""
        raise DataError(f"{name}: expected labels of shape (N,) or (N, 1); received shape "
                        f"{arr.shape}{hint}")
    if arr.size == 0:
        raise DataError(f"{name}: expected at least one label; received an empty split")
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(f"{name}: expected integer class labels; received non-integral "
                            f"floats (dtype {arr.dtype})")
        note("float labels with integral values converted to int64", name)
    elif arr.dtype.kind not in "iu":
        raise DataError(f"{name}: expected integer class labels; received dtype {arr.dtype}")
    if len(arr) != n_images:
        raise DataError(f"{name}: expected one label per image ({n_images}, as in "
                        f"{images_name}); received {len(arr)}")
    if arr.min() < 0:
        raise DataError(f"{name}: expected labels 0..K-1; received negative label "
                        f"{arr.min():g}")
    return arr.astype(np.int64)
