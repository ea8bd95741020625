"""python -m bench weights: every file a selection loads, its source, and whether the folder a run
reads first holds it, with the hash Keras publishes checked; no TensorFlow."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import fresh_python

from backbones import canonical, get, weights_files
from bench.__main__ import main
from bench.weights import WEIGHTS_ENV

MOBILENET = "mobilenet_2_5_224_tf_no_top.h5"  # the genuine file in ../shared/weights
DENSENET = "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5"  # md5 published


@pytest.fixture(autouse=True)
def _no_folder_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    (tmp_path / "keras-home").mkdir()  # Keras reads /tmp/.keras where its home is missing
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))  # never the user's cache


@pytest.fixture
def folder(tmp_path, real_weights_dir) -> Path:
    """One genuine file, and a damaged copy of it under DenseNet121's name."""
    found = tmp_path / "weights"
    found.mkdir()
    shutil.copyfile(real_weights_dir / MOBILENET, found / MOBILENET)
    damaged = bytearray((found / MOBILENET).read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    (found / DENSENET).write_bytes(bytes(damaged))
    return found


def _table(text: str) -> dict[str, dict]:
    """The printed table's rows by backbone."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    rows = [dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True))
            for line in lines[2:]]
    return {row["backbone"]: row for row in rows}


def test_all_lists_every_file_and_checks_the_folder(folder, capsys):
    code = main(["weights", "--all", "MobileNet_0.25", "--image-size", "native",
                 "--weights-dir", str(folder)])
    out = capsys.readouterr().out
    table = _table(out)
    specs = [*canonical(), get("MobileNet_0.25")]
    assert list(table) == [spec.name for spec in specs]  # no baseline: they load no file
    for spec in specs:
        row = table[spec.name]
        assert row["file"] == spec.weights_file(spec.input_size)
        assert row["source"] == weights_files.no_top_origin(spec.family, row["file"])
        assert row["source"].startswith("https://storage.googleapis.com/")
    assert table["MobileNet_0.25"]["status"].startswith("present (Keras publishes no hash")
    assert table["MobileNet_0.25"]["size"] == "2.0 MiB"
    assert table["MobileNet_0.25"]["sha256"] == "dbdb03ee2a22"
    assert table["DenseNet121"]["status"].startswith("wrong md5")
    assert {row["status"] for name, row in table.items()
            if name not in ("MobileNet_0.25", "DenseNet121")} == {"missing"}
    assert f"1 present, 1 wrong hash, {len(specs) - 2} missing (of {len(specs)})." in out
    assert code == 1  # some file a run needs is not there


def test_a_published_hash_is_checked(folder, capsys, monkeypatch):
    sha256 = hashlib.sha256((folder / MOBILENET).read_bytes()).hexdigest()
    monkeypatch.setitem(weights_files.NO_TOP_HASHES, MOBILENET, sha256)  # as if Keras had one
    args = ["weights", "MobileNet_0.25", "--image-size", "224", "--weights-dir", str(folder)]
    assert main(args) == 0
    assert _table(capsys.readouterr().out)["MobileNet_0.25"]["status"] == "ok (sha256 checked)"
    monkeypatch.setitem(weights_files.NO_TOP_HASHES, MOBILENET,
                        hashlib.md5((folder / MOBILENET).read_bytes()).hexdigest())
    assert main(args) == 0
    assert _table(capsys.readouterr().out)["MobileNet_0.25"]["status"] == "ok (md5 checked)"
    shutil.copyfile(folder / DENSENET, folder / MOBILENET)  # the damaged copy in its place
    assert main(args) == 1
    assert _table(capsys.readouterr().out)["MobileNet_0.25"]["status"].startswith(
        "wrong md5")


def test_another_resolution_stands_in_as_a_run_would_use_it(folder, capsys):
    assert main(["weights", "MobileNet_0.25", "--weights-dir", str(folder)]) == 0  # at 160
    row = _table(capsys.readouterr().out)["MobileNet_0.25"]
    assert row["file"] == "mobilenet_2_5_160_tf_no_top.h5"  # what Keras would load
    assert row["status"].startswith(f"{MOBILENET} stands in (nearest resolution)")


def test_the_folder_is_the_one_a_run_reads_first(folder, tmp_path, capsys, monkeypatch):
    args = ["weights", "MobileNet_0.25", "DenseNet121", "--image-size", "224"]
    monkeypatch.setenv(WEIGHTS_ENV, str(folder))
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"checked in {folder} (${WEIGHTS_ENV})" in out
    assert _table(out)["DenseNet121"]["status"].startswith("wrong md5")
    monkeypatch.delenv(WEIGHTS_ENV)
    cache = tmp_path / "keras-home" / "models"  # Keras' cache: $KERAS_HOME/models
    cache.mkdir()
    shutil.copyfile(folder / MOBILENET, cache / MOBILENET)
    assert main(args) == 1
    out = capsys.readouterr().out
    assert f"checked in {cache} (Keras' cache)" in out
    assert _table(out)["MobileNet_0.25"]["status"].startswith("present")
    assert _table(out)["DenseNet121"]["status"] == "missing"
    empty = tmp_path / "empty"
    empty.mkdir()  # a weights folder without the file: the run asks Keras, which has it
    assert main([*args, "--weights-dir", str(empty)]) == 1
    status = _table(capsys.readouterr().out)["MobileNet_0.25"]["status"]
    assert status.endswith(f"in Keras' cache {cache}")


def test_baselines_need_no_file(capsys):
    assert main(["weights", "dense", "scratch-cnn"]) == 0
    assert "None of the selected" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "env", "expected"), [
    ([], None, "name at least one backbone"),
    (["densnet121"], None, "Did you mean DenseNet121"),
    (["DenseNet121", "--weights-dir", "/no/such/folder"], None, "--weights-dir: no such folder"),
    (["DenseNet121"], "/no/such/folder", f"${WEIGHTS_ENV}: no such folder"),
    (["DenseNet121", "--image-size", "0"], None, "--image-size must be a positive integer"),
    (["DenseNet121", "--image-size", "big"], None, "--image-size must be a positive integer"),
    (["DenseNet121", "--seed", "3"], None, "unrecognized arguments: --seed"),
], ids=["nothing named", "unknown name", "no such folder", "no such env folder", "size 0",
        "size word", "a run's flag"])
def test_a_bad_request_is_one_line_and_exit_2(args, env, expected, capsys, monkeypatch):
    if env:
        monkeypatch.setenv(WEIGHTS_ENV, env)
    assert main(["weights", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("bench: error: ")
    assert expected in err


_WEIGHTS = """
import json, runpy, sys
sys.argv = ["bench", "weights", *json.loads(sys.argv[1])]
try:
    runpy.run_module("bench", run_name="__main__")
except SystemExit as exit:
    result = exit.code
"""


def test_weights_imports_no_tensorflow(folder):
    found = fresh_python(_WEIGHTS, json.dumps(["--all", "--weights-dir", str(folder)]))
    assert found == {"result": 1, "heavy": []}
