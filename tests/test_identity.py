"""What makes two runs the same run: the config hash, and the rows that stand for a run."""

import pytest

from backbones import get
from bench.config import RunConfig
from bench.identity import failed_row, identify


@pytest.mark.parametrize("name, config", [
    ("dense", RunConfig(epochs=2)),
    ("MobileNet_0.25", RunConfig(weights="random", image_size=32, protocol="holdout", seed=5)),
])
def test_a_failed_row_is_the_run_it_stands_for(tiny_data, name, config):
    spec = get(name)
    row = failed_row(spec, config, tiny_data, "killed", 1.5)
    ident = identify(spec, config, tiny_data)
    assert (row.status, row.error, row.total_s) == ("error", "killed", 1.5)
    assert (row.config_hash, row.group) == (ident.config_hash, ident.group)
    assert row.weights_id == ident.weights_id and row.image_size == ident.size
    assert row.preprocess == ("lesson" if spec.kind == "baseline" else config.preprocess)
    assert row.data_checksum == tiny_data.checksum() and row.n_classes == tiny_data.n_classes


def test_a_failed_row_names_a_weights_file_never_its_path(tiny_data, tmp_path):
    config = RunConfig(weights=str(tmp_path / "missing.weights.h5"), image_size=32)
    row = failed_row(get("MobileNet_0.25"), config, tiny_data, "no such file", 0.1)
    assert row.weights == "missing.weights.h5" and str(tmp_path) not in str(row.to_dict())
    # a file that is not there cannot be hashed: what is known names the run
    assert row.config_hash.startswith("unidentified-")
    again = failed_row(get("MobileNet_0.25"), config, tiny_data, "still no file", 0.2)
    assert again.config_hash == row.config_hash  # so the same failure again replaces it


def test_extra_fields_reach_the_row(tiny_data):
    row = failed_row(get("dense"), RunConfig(), tiny_data, "x", 0.0, keras_version="3")
    assert row.keras_version == "3"
