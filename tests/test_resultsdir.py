"""The results folder's layout: file names that are safe whatever a backbone is called."""

from __future__ import annotations

import os

import pytest

from bench.resultsdir import head_file_name, safe_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("ResNet50", "ResNet50"),
        ("efficientnet_v2-b0.x", "efficientnet_v2-b0.x"),
        ("a b/c:d", "a_b_c_d"),
        ("../evil", "_evil"),
        (".hidden", "hidden"),
        ("...", "_"),
        ("", "_"),
        ("Modèle", "Mod_le"),
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected


def test_safe_name_never_escapes_and_is_bounded() -> None:
    for name in ["../../etc/passwd", "/abs/path", "..\\win", "a" * 1000, "\n\t"]:
        cleaned = safe_name(name)
        assert cleaned and not cleaned.startswith(".")
        assert "/" not in cleaned and "\\" not in cleaned and os.sep not in cleaned
        assert len(cleaned) <= 120  # "history_" + name + ".png" stays under 255 bytes
    assert safe_name("a" * 1000) == "a" * 120


def test_a_head_file_is_named_by_backbone_and_run():
    assert head_file_name("Mobile Net/1", "abc") == "heads/Mobile_Net_1-abc.weights.npz"
