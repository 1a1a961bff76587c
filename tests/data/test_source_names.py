"""Unnamed roots are told apart by folder name: two roots of one name are said to merge."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from cxrnet.data.datamodule import ChestXRayDataModule


def test_two_unnamed_roots_of_one_folder_name_are_warned_about(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roots = [tmp_path / site / "chest_xray" for site in ("a", "b")]
    for root in roots:
        shutil.copytree(synthetic_root, root)
    with caplog.at_level(logging.WARNING, logger="cxrnet.data.datamodule"):
        ChestXRayDataModule([str(root) for root in roots], image_size=32, cache_dir=None)
    (warning,) = [r.getMessage() for r in caplog.records if "become source" in r.getMessage()]
    assert "'chest_xray'" in warning and "data.sources=" in warning
    for root in roots:
        assert str(root) in warning


def test_roots_of_different_names_are_not_warned_about(
    synthetic_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    roots = [tmp_path / name for name in ("public", "site")]
    for root in roots:
        shutil.copytree(synthetic_root, root)
    with caplog.at_level(logging.WARNING, logger="cxrnet.data.datamodule"):
        ChestXRayDataModule([str(root) for root in roots], image_size=32, cache_dir=None)
    assert not [r for r in caplog.records if "become source" in r.getMessage()]
