"""A cache disk that fills during the first build (issue 20 row 2): one error line naming the
folder, the space needed and the space free; a failed record; no staging folder left behind."""

from __future__ import annotations

import errno
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.console import QUICK, run_train

import cxrnet.data.cache_entry as cache
from cxrnet.user_errors import DataError


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: room for the digests, not for the decoded films."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip()}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


@pytest.mark.slow
def test_a_full_cache_disk_is_one_error_and_a_failed_record(
    small_disk: Path, synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        [*QUICK, f"data.root={synthetic_root}", "data.image_size=64", "model.net.image_size=64"],
        tmp_path,
        env={"CXRNET_CACHE_DIR": str(small_disk)},
    )
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("error: ")]
    assert str(small_disk) in line and "needs" in line and "free" in line
    assert "Traceback" not in done.stderr
    (record,) = (tmp_path / "logs").glob("*/runs/*/metrics.json")
    assert json.loads(record.read_text())["status"] == "failed"
    assert not list(small_disk.rglob("*.partial-*")), "the staging folder was left behind"


def test_a_failed_allocation_is_a_data_error(monkeypatch, tmp_path: Path) -> None:
    def full(descriptor: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache.os, "posix_fallocate", full)
    staging = tmp_path / "cache" / ".key.partial-1"
    staging.mkdir(parents=True)
    with pytest.raises(DataError, match=r"needs 0\.4 MB and .* MB is free"):
        cache._mapped_file(staging / cache.IMAGES_FILE, (100, 64, 64))
