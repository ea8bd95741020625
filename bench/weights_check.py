"""python -m bench weights: the Keras weights files a selection of backbones needs, where Keras
downloads each from, and whether the folder a run reads first holds it, with its size and its
hash checked against the one Keras publishes.

The folder checked is the one a run looks in first: --weights-dir, else $BENCH_WEIGHTS_DIR, both
read as a run reads them (bench.weights.resolve_weights: the exact file, else MobileNet's nearest
resolution); else Keras' own cache, where Keras looks for its exact file name. No TensorFlow.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from backbones import BackboneSpec, UnknownBackboneError, canonical, load_extras, select
from backbones.weights_files import file_hash_algorithm, no_top_hash, no_top_origin
from bench.commands import UsageError
from bench.config import ConfigError, RunConfig
from bench.identity import file_sha256
from bench.weights import WEIGHTS_ENV, resolve_weights, weights_folder

OK, PRESENT, NEAREST = "ok", "present", "nearest"
MISSING, WRONG_HASH, UNKNOWN = "missing", "wrong hash", "unknown"
FAILING = (MISSING, WRONG_HASH, UNKNOWN)  # what a run cannot load as Keras' own file
KERAS_CACHE = "Keras' cache"


@dataclass(frozen=True)
class WeightsFile:
    """One selected backbone's weights file, as the checked folder holds it."""

    backbone: str
    file: str | None  # Keras' own name: what the file must be saved as
    source: str | None  # the URL Keras downloads it from
    status: str  # OK, PRESENT (Keras publishes no hash), NEAREST, MISSING, WRONG_HASH, UNKNOWN
    detail: str  # the status in words
    size: int | None = None  # bytes of the file found
    sha256: str | None = None  # of the file found


def keras_cache() -> Path:
    """Keras' download folder, found as keras.utils.get_file finds it: $KERAS_HOME, else
    ~/.keras; /tmp/.keras where that is not writable (or does not exist yet); then models/."""
    home = os.environ.get("KERAS_HOME")
    if home is None:
        user = os.path.expanduser("~")
        home = os.path.join(user if os.access(user, os.W_OK) else "/tmp", ".keras")
    home = os.path.expanduser(home)
    if not os.access(home, os.W_OK):
        home = os.path.join("/tmp", ".keras")
    return Path(home) / "models"


def checked_folder(weights_dir: str | None) -> tuple[Path, str]:
    """The folder to check and how it was chosen; UsageError for a named folder that is not
    there."""
    folder = weights_folder(weights_dir)
    if folder is None:
        return keras_cache(), KERAS_CACHE
    flag = "--weights-dir" if weights_dir else f"${WEIGHTS_ENV}"
    if not Path(folder).is_dir():
        raise UsageError(f"{flag}: no such folder {folder!r}")
    return Path(folder), flag


def check(spec: BackboneSpec, size: int, folder: Path, weights_dir: bool) -> WeightsFile:
    """The weights file `spec` loads at `size`, looked for in `folder`: as a run reads a
    weights folder when `weights_dir`, else as Keras reads its cache (the exact name only)."""
    try:
        name = spec.weights_file(size)
    except ValueError as err:  # a BENCH_EXTRA_BACKBONES row of a family Keras does not have
        return WeightsFile(spec.name, None, None, UNKNOWN, str(err))
    source = no_top_origin(spec.family, name)
    found = folder / name
    if weights_dir:
        resolved = resolve_weights(spec, size, RunConfig(image_size=size,
                                                        weights_dir=str(folder)))
        # not in the folder: the run asks Keras, which looks in its cache before downloading
        found = Path(resolved.path) if resolved.source == "file" else keras_cache() / name
    if not found.is_file():
        return WeightsFile(spec.name, name, source, MISSING, MISSING)
    status, detail, digest = _verified(found)
    if found.name != name:
        status, detail = NEAREST, f"{found.name} stands in (nearest resolution); {detail}"
    elif found.parent != folder:
        detail = f"{detail}, in Keras' cache {found.parent}"
    return WeightsFile(spec.name, name, source, status, detail, found.stat().st_size, digest)


def _verified(path: Path) -> tuple[str, str, str]:
    """(status, words, sha256) of a file against the hash Keras publishes for its name."""
    digest = file_sha256(path)
    expected = no_top_hash(path.name)
    if expected is None:
        return PRESENT, "present (Keras publishes no hash for it)", digest
    algorithm = file_hash_algorithm(expected)
    actual = digest if algorithm == "sha256" else _md5(path)
    if actual != expected:
        return WRONG_HASH, (f"wrong {algorithm}: {actual[:12]}..., Keras publishes "
                            f"{expected[:12]}... (damaged or another file)"), digest
    return OK, f"ok ({algorithm} checked)", digest


def _md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def weights(names: Sequence[str], all_: bool, image_size: int | str = 160,
            weights_dir: str | None = None) -> int:
    """Prints the table of the selection's weights files; returns how many of them a run
    cannot load as Keras' own file (missing, wrong hash or unknown)."""
    try:
        config = RunConfig(image_size=image_size, weights_dir=weights_dir)
    except ConfigError as err:
        raise UsageError(f"--image-size {err.reason}") from None
    specs = [s for s in _select(names, all_) if s.kind == "backbone"]
    folder, how = checked_folder(weights_dir)
    if not specs:
        print("None of the selected models loads pretrained weights (from-scratch baselines).")
        return 0
    found = [check(s, config.size_for(s.input_size), folder, how != KERAS_CACHE)
             for s in specs]
    _print_table(found, folder, how, image_size)
    return sum(f.status in FAILING for f in found)


def _select(names: Sequence[str], all_: bool) -> list:
    """The registry rows named (and with --all the canonical ones), each once, in order."""
    if not names and not all_:
        raise UsageError("name at least one backbone, or pass --all (see: python -m bench "
                         "--list)")
    try:
        load_extras()
        specs = (canonical() if all_ else []) + (select(list(names)) if names else [])
    except UnknownBackboneError as err:
        raise UsageError(str(err)) from None
    except (ImportError, ValueError) as err:
        raise UsageError(f"BENCH_EXTRA_BACKBONES: {err}") from None
    return list({s.name: s for s in specs}.values())


def _print_table(found: list[WeightsFile], folder: Path, how: str, image_size: int | str
                 ) -> None:
    from tabulate import tabulate

    table = [{"backbone": f.backbone, "file": f.file or "-",
              "size": f"{f.size / 2**20:,.1f} MiB" if f.size is not None else "-",
              "status": f.detail, "sha256": f.sha256[:12] if f.sha256 else "-",
              "source": f.source or "-"} for f in found]
    where = f"{folder} ({how}{', does not exist' if not folder.is_dir() else ''})"
    print(f"Weights files at --image-size {image_size}, checked in {where}:\n")
    print(tabulate(table, headers="keys", tablefmt="github"))
    counts = {s: sum(f.status == s for f in found) for s in
              (OK, PRESENT, NEAREST, WRONG_HASH, MISSING, UNKNOWN)}
    print("\n" + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" (of {len(found)}).")
    if counts[MISSING] or counts[WRONG_HASH]:
        print(f"Offline, download each missing or wrong file from its source into {folder}, "
              "saved under the name in `file`.")
    if how == KERAS_CACHE:
        print("A run without --weights-dir loads these from Keras' cache, else downloads them.")
    else:
        print(f"A run looks in {how} first, then in Keras' cache ({keras_cache()}), then "
              "downloads.")
