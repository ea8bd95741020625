"""One .npy file in, one array out, or a one-line DataError: never a pickle, never a blind
allocation.

A .npy header states the array's shape and dtype, and np.load allocates what it states before
reading a byte of data: a damaged or hostile header claiming terabytes ends in MemoryError.
load_npy compares the claim with the file's real size first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from bench.data import DataError

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


def load_npy(path: str | os.PathLike) -> np.ndarray:
    """np.load without pickle, after checking that the file holds as many bytes as its header
    claims; every way a file can be unreadable becomes a DataError."""
    path = Path(path)
    check_size(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as err:
        msg = str(err)
        if "Object arrays" in msg:
            raise DataError(f"{path}: expected a numeric array; received an object array "
                            "(object arrays are refused (allow_pickle=False))") from err
        if "pickled" in msg:
            raise DataError(f"{path}: expected a NumPy .npy array; received {_not_npy(path)} "
                            "(pickled data is refused (allow_pickle=False))") from err
        raise DataError(f"{path}: expected a readable .npy array; received a corrupt or "
                        f"truncated file ({msg})") from err
    except (OSError, EOFError) as err:
        raise DataError(f"{path}: expected a readable .npy array; received a corrupt, empty "
                        f"or unreadable file ({err})") from err
    if not isinstance(arr, np.ndarray):  # an .npz archive saved under a .npy name
        arr.close()
        raise DataError(f"{path}: expected a single .npy array; received an .npz archive")
    return arr


def check_size(path: str | os.PathLike) -> None:
    """Refuses a file whose size differs from what its header claims, before np.load
    allocates the claim. A header that does not parse is left to np.load, whose error is
    more telling (a pickle, an .npz, an empty file)."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            shape, _fortran, dtype = _HEADER_READERS[version](fh)
            header = fh.tell()
            real = os.fstat(fh.fileno()).st_size
    except (ValueError, EOFError, OSError, KeyError):
        return
    if dtype.hasobject:  # pickled objects have no fixed size; np.load refuses them anyway
        return
    claimed = header + int(np.prod(shape, dtype=object)) * dtype.itemsize
    if claimed != real:
        what = "truncated" if real < claimed else "longer than its array"
        raise DataError(f"{path}: expected {_size(claimed)}, as its header claims (shape "
                        f"{tuple(shape)}, dtype {dtype}); received a file of {_size(real)}: "
                        f"corrupt or {what}")


def _size(n: int) -> str:
    """Bytes, exactly, and in binary units when that reads better."""
    exact = f"{n:,} bytes"
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{exact} ({n / scale:.1f} {unit})"
    return exact


def _not_npy(path: Path) -> str:
    with open(path, "rb") as fh:
        head = fh.read(2)
    # Pickle protocols 2+ open with 0x80; anything else is simply not a .npy file.
    return "a pickled Python object" if head[:1] == b"\x80" else "a file that is not .npy"
