"""Image folders: decoding 1024x768 JPEGs and extracting MobileNet_0.25 features from them
(images/s, peak RSS), and the checksum of 10,000 files.

Sizes from the environment, so that a quick check can run small:
BENCH_PERF_FOLDER_N (default 2000 JPEGs), BENCH_PERF_CHECKSUM_N (default 10000 files).
"""

from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

N_JPEGS = int(os.environ.get("BENCH_PERF_FOLDER_N", "2000"))
N_CHECKSUM = int(os.environ.get("BENCH_PERF_CHECKSUM_N", "10000"))
JPEG_SIZE = (1024, 768)


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def _write(folder: Path, images: np.ndarray, labels: np.ndarray, n: int, suffix: str,
           size: tuple[int, int] | None) -> Path:
    """n images drawn in turn from `images`, as DIR/<class>/NNNNN<suffix>, upscaled to size."""
    for i in range(n):
        j = i % len(images)
        target = folder / f"class_{labels[j]}"
        target.mkdir(parents=True, exist_ok=True)
        img = Image.fromarray(images[j])
        if size:
            img = img.resize(size, Image.BILINEAR)
        img.save(target / f"{i:05d}{suffix}", quality=90)
    return folder


@pytest.fixture(scope="module")
def jpeg_folder(ds10, tmp_path_factory) -> Path:
    return _write(tmp_path_factory.mktemp("jpegs"), ds10.train_images, ds10.train_labels,
                  N_JPEGS, ".jpg", JPEG_SIZE)


def test_decode_and_extract_large_jpegs(benchmark, jpeg_folder, weights_dir, report):
    import bench
    from bench.data import load_dataset
    from bench.engine.quiet import import_tensorflow

    import_tensorflow()  # its start-up is neither decoding nor memory the images take
    before = _peak_rss_mb()
    data = load_dataset(jpeg_folder, storage_size=160)
    began = time.perf_counter()
    benchmark.pedantic(lambda: data.train_images, rounds=1, iterations=1)
    decode_s = time.perf_counter() - began
    after_decode = _peak_rss_mb()
    frame = bench.run("MobileNet_0.25", data=data, weights_dir=str(weights_dir), epochs=1)
    extract_s = float(frame["extract_s"].iloc[0])
    n = data.n_train + data.n_test
    info = {"images": n, "decode_images_per_s": n / decode_s,
            "extract_images_per_s": n / extract_s, "peak_rss_mb_before": before,
            "peak_rss_mb_after_decode": after_decode, "peak_rss_mb_after_extract": _peak_rss_mb(),
            "stored_mb": (data.train_images.nbytes + data.test_images.nbytes) / 2**20}
    benchmark.extra_info.update(info)
    report(f"folder of {n} JPEGs {JPEG_SIZE[0]}x{JPEG_SIZE[1]}: decode "
           f"{info['decode_images_per_s']:.0f} images/s, MobileNet_0.25 extraction "
           f"{info['extract_images_per_s']:.0f} images/s, peak RSS {before:.0f} MB before, "
           f"{after_decode:.0f} MB after decoding ({info['stored_mb']:.0f} MB stored), "
           f"{info['peak_rss_mb_after_extract']:.0f} MB after extraction")
    assert data.train_images.shape[1:] == (160, 160, 3)


def test_checksum_of_many_files(benchmark, ds10, tmp_path, report):
    from bench.data import folder as imagefolder

    folder = _write(tmp_path / "many", ds10.train_images, ds10.train_labels, N_CHECKSUM, ".png",
                    None)
    listing = imagefolder.list_folder(folder)
    digest = benchmark.pedantic(imagefolder.folder_checksum, args=(listing,), rounds=1,
                                iterations=1)
    seconds = benchmark.stats.stats.max
    benchmark.extra_info.update({"files": N_CHECKSUM, "checksum_s": seconds})
    report(f"checksum of {N_CHECKSUM} image files: {seconds:.2f} s")
    assert len(digest) == 64
