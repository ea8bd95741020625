"""Nothing trusted blindly: verified downloads, bounded .npy loads, arguments checked before
anything is touched, and a Ray address is local only when it is a loopback.

Downloads are served by a local HTTP server that misbehaves on purpose (short bodies, a
Content-Length that lies, a stall); no test reaches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import synthetic_arrays, write_dataset

from bench.__main__ import main
from bench.data import FILES, DataError, dollarstreet, load_dataset
from bench.data.dollarstreet import DEFAULT_DIR, MANIFEST

TIB = 2**40


# --- bounded .npy loads --------------------------------------------------------------------


def _npy_header(shape: tuple[int, ...], dtype: str = "<u1") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def test_a_header_claiming_terabytes_is_refused_before_any_allocation(tmp_path):
    from bench.data.npy import load_npy

    path = tmp_path / "train_images.npy"
    shape = (1_000_000, 1000, 1000, 3)  # 3e12 bytes of uint8: 2.7 TiB
    path.write_bytes(_npy_header(shape) + bytes(64))
    with pytest.raises(DataError) as info:
        load_npy(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    assert "(2.7 TiB)" in msg and f"{path.stat().st_size:,} bytes" in msg
    assert "truncated" in msg


def test_a_dataset_folder_with_a_terabyte_header_is_a_data_error(tmp_path):
    folder = write_dataset(tmp_path / "ds", train_images=_npy_header((10**6, 10**3, 10**3, 3)))
    with pytest.raises(DataError, match=r"train_images\.npy: expected .*\(2\.7 TiB\)"):
        load_dataset(folder)


@pytest.mark.parametrize("extra, word", [(-10, "truncated"), (7, "longer than its array")])
def test_a_file_shorter_or_longer_than_its_header_says_is_refused(tmp_path, extra, word):
    from bench.data.npy import load_npy

    arr = np.arange(100, dtype=np.int64)
    path = tmp_path / "a.npy"
    np.save(path, arr)
    data = path.read_bytes()
    path.write_bytes(data[:extra] if extra < 0 else data + bytes(extra))
    with pytest.raises(DataError, match=rf"expected {len(data):,} bytes.*{word}"):
        load_npy(path)
    np.save(path, arr)
    assert np.array_equal(load_npy(path), arr)  # an honest file loads as np.load has it


# --- verified downloads ----------------------------------------------------------------------


class _Zenodo:
    """What the local server serves: each file's bytes, how each path misbehaves, and the
    requests it answered."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.mode: dict[str, str] = {}  # name -> "short", "no-length", "stall" (else whole)
        self.requests: list[str] = []
        self.release = threading.Event()  # ends a stall when the test is over


def _handler(zenodo: _Zenodo):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # the body ends when the connection closes

        def do_GET(self):  # noqa: N802 (http.server's name)
            name = self.path.strip("/").split("?")[0]
            zenodo.requests.append(name)
            body, mode = zenodo.files[name], zenodo.mode.get(name, "whole")
            self.send_response(200)
            if mode != "no-length":
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if mode == "stall":
                zenodo.release.wait(60)
                return
            self.wfile.write(body if mode == "whole" else body[: len(body) // 2])

        def log_message(self, *args):
            pass

    return Handler


@pytest.fixture
def zenodo(monkeypatch):
    """A local stand-in for the Zenodo record, DOWNLOADS pointed at it, a 1 s socket timeout."""
    pytest.importorskip("keras")  # get_file
    files = {}
    for name, arr in zip(FILES, synthetic_arrays(n_train=20, n_test=10, side=8), strict=True):
        buf = io.BytesIO()
        np.save(buf, arr)
        files[name] = buf.getvalue()
    state = _Zenodo(files)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setattr(dollarstreet, "DOWNLOADS",
                        {name: f"{base}/{name}?download=1" for name in FILES})
    monkeypatch.setattr(dollarstreet, "TIMEOUT_S", 1.0)
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("mode", ["short", "no-length"])
def test_a_truncated_body_is_deleted_and_no_folder_is_left(zenodo, tmp_path, monkeypatch, mode):
    """Cut short with or without a Content-Length: an error naming the file, nothing kept that
    could pass for data, not even the data/ folder the download created."""
    monkeypatch.chdir(tmp_path)
    zenodo.mode["train_images.npy"] = mode  # the first file: nothing complete to keep
    with pytest.raises(DataError, match=r"train_images\.npy: .*(incomplete|retrieval)") as info:
        load_dataset()
    assert "\n" not in str(info.value)
    assert not (tmp_path / "data").exists()
    zenodo.mode = {"test_images.npy": mode}  # a later one: the complete ones stay, it does not
    with pytest.raises(DataError, match=r"test_images\.npy: "):
        load_dataset()
    assert sorted(p.name for p in (tmp_path / DEFAULT_DIR).iterdir()) == sorted(FILES[:2])


def test_a_stalled_server_times_out(zenodo, tmp_path):
    zenodo.mode["train_images.npy"] = "stall"
    start = time.monotonic()
    with pytest.raises(dollarstreet.DownloadError, match=r"train_images\.npy: .*timed out"):
        dollarstreet.download(tmp_path / "dl")
    assert time.monotonic() - start < 30
    assert __import__("socket").getdefaulttimeout() is None  # the process default is restored


def test_the_manifest_is_written_once_and_a_damaged_file_is_fetched_again(zenodo, tmp_path,
                                                                           monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = load_dataset()
    folder = tmp_path / DEFAULT_DIR
    sums = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in FILES}
    assert (folder / MANIFEST).read_text() == "".join(f"{sums[n]}  {n}\n" for n in FILES)
    assert sorted(zenodo.requests) == sorted(FILES)
    # the same size, one byte changed: only the recorded sha256 can tell
    path = folder / "test_images.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    zenodo.requests.clear()
    again = load_dataset()
    assert zenodo.requests == ["test_images.npy"]
    assert again.checksum() == first.checksum()


def test_a_file_that_still_fails_after_one_refetch_is_named(zenodo, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    load_dataset()
    folder = tmp_path / DEFAULT_DIR
    changed = bytearray(zenodo.files["train_labels.npy"])
    changed[-1] ^= 0xFF
    zenodo.files["train_labels.npy"] = bytes(changed)  # the server now sends other bytes
    (folder / "train_labels.npy").write_bytes(bytes(changed))
    zenodo.requests.clear()
    with pytest.raises(DataError, match=r"train_labels\.npy has sha256 .* recorded in "
                                        r"SHA256SUMS even after downloading") as info:
        load_dataset()
    assert zenodo.requests == ["train_labels.npy"] and "\n" not in str(info.value)
    with pytest.raises(DataError, match=r"train_labels\.npy has sha256") as info:
        load_dataset(download=False)  # a worker's load: named, never fetched
    assert "even after" not in str(info.value) and zenodo.requests == ["train_labels.npy"]


def test_a_truncated_file_kept_by_an_older_download_is_fetched_again(zenodo, tmp_path,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays = synthetic_arrays(n_train=20, n_test=10, side=8)
    folder = write_dataset(tmp_path / DEFAULT_DIR, arrays)
    data = (folder / "train_images.npy").read_bytes()
    (folder / "train_images.npy").write_bytes(data[: len(data) // 2])
    ds = load_dataset()
    assert zenodo.requests == ["train_images.npy"] and ds.n_train == 20
    assert (folder / MANIFEST).is_file()


# --- arguments checked before anything is touched ------------------------------------------


@pytest.fixture
def no_download(monkeypatch):
    def refuse(dest):
        raise AssertionError(f"nothing may be downloaded (into {dest})")

    monkeypatch.setattr(dollarstreet, "download", refuse)


def test_an_image_size_below_a_backbones_minimum_touches_nothing(tmp_path, monkeypatch, capsys,
                                                                 no_download):
    monkeypatch.chdir(tmp_path)
    assert main(["--image-size", "10", "MobileNet_0.25"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("bench: error: --image-size 10 is below the smallest input side of "
                          "MobileNet_0.25 (32): expected at least 32")
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no results/, no data/


def test_the_image_size_message_names_the_largest_minimum(tmp_path, capsys, no_download):
    args = ["Xception", "InceptionV3", "MobileNet_0.25", "dense", "--image-size", "50",
            "--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Xception (71), InceptionV3 (75): expected at least 75" in err
    assert "MobileNet" not in err and "dense" not in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "-3"], "--epochs must be >= 1; received -3"),
    (["--timeout-min", "nan"], "--timeout-min needs a positive, finite number of minutes and "
                               "isolated runs (received nan)"),
    (["--timeout-min", "inf"], "--timeout-min needs a positive, finite number of minutes and "
                               "isolated runs (received inf)"),
    (["--val-fraction", "nan"], "--val-fraction must be a number strictly between 0 and 1; "
                                "received nan"),
    (["--ray", "--gpus-per-task", "inf"], "--gpus-per-task must be a finite number >= 0; "
                                          "received inf"),
    (["--ray", "--cpus-per-task", "nan"], "--cpus-per-task must be a finite number >= 0; "
                                          "received nan"),
], ids=["epochs", "timeout-nan", "timeout-inf", "val-fraction", "gpus", "cpus"])
def test_each_number_is_checked_against_its_real_rule(tmp_path, capsys, no_download, args,
                                                      expected):
    assert main(["dense", "--data", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                 *args]) == 2
    assert capsys.readouterr().err == f"bench: error: {expected}\n"
    assert list(tmp_path.iterdir()) == []


# --- Ray: local means loopback ----------------------------------------------------------------


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1:6379", True),
    ("127.3.2.1:6379", True),
    ("[::1]:6379", True),
    ("localhost:6379", True),
    ("ray://127.0.0.1:10001", True),
    ("127.evil.example.com:6379", False),
    ("localhost.example.com:6379", False),
    ("10.0.0.7:6379", False),
    ("headnode:6379", False),
])
def test_only_a_loopback_address_is_local(address, local):
    from bench.executors.ray_cluster import is_local_host

    assert is_local_host(address) is local


@pytest.fixture
def ray_token(tmp_path, monkeypatch):
    """A home whose ~/.ray/auth_token exists, RAY_AUTH_MODE unset, Ray's settings untouched
    (reloading them is recorded instead)."""
    from bench.executors import ray_cluster

    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("secret")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    reloads = []
    monkeypatch.setattr(ray_cluster, "_reload_ray_config",
                        lambda: reloads.append(os.environ.get("RAY_AUTH_MODE")))
    return reloads


def test_token_mode_is_set_only_around_joining_a_loopback_head(ray_token):
    from bench.executors.ray_cluster import token_auth_for

    with token_auth_for("127.0.0.1:6379"):
        assert os.environ["RAY_AUTH_MODE"] == "token"
    assert "RAY_AUTH_MODE" not in os.environ and ray_token == ["token"]
    with token_auth_for("127.evil.example.com:6379"):
        assert "RAY_AUTH_MODE" not in os.environ  # this user's token stays home
    assert ray_token == ["token"]


def test_a_failed_join_restores_the_environment(ray_token):
    from bench.executors.ray_cluster import token_auth_for

    with pytest.raises(RuntimeError), token_auth_for("localhost:6379"):
        raise RuntimeError("ray.init failed")
    assert "RAY_AUTH_MODE" not in os.environ


def test_an_explicit_mode_is_left_as_it_is(ray_token, monkeypatch):
    from bench.executors.ray_cluster import token_auth_for

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with token_auth_for("127.0.0.1:6379"):
        assert os.environ["RAY_AUTH_MODE"] == "disabled"
    assert os.environ["RAY_AUTH_MODE"] == "disabled" and ray_token == []


def test_readme_says_a_ray_cluster_is_trusted_both_ways():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "trusted both ways" in readme and "pickled" in readme
