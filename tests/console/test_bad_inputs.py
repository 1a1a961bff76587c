"""Bad input the way users meet it: files that fail and get fixed, unreadable files in skip mode,
broken links, odd file names, tiny images, relative manifests, a build killed mid-way."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers.datamodule import make_dm
from PIL import Image

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.decode import MIN_IMAGE_SIDE
from cxrnet.user_errors import DataError


def make_unreadable(path: Path) -> None:
    """A file that exists but cannot be read: no permission, or (as root, whom permissions do
    not stop) a link to /proc/self/mem, whose first page every read fails with EIO."""
    if os.geteuid() != 0:
        path.chmod(0)
        return
    path.unlink()
    path.symlink_to("/proc/self/mem")


def _first(root: Path, split: str, cls: str) -> Path:
    return sorted((root / split / cls).glob("*.jpeg"))[0]


# ---------------------------------------------------------------------------------- the cache


def test_a_file_that_failed_and_was_fixed_is_decoded_on_the_next_run(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    """Row: fixed after a read error, the file kept path, size and mtime (the cache key), and
    the cached failure was served again. Here a transient error is stood in for by bytes that
    do not decode, then the original bytes and mtime put back."""
    film = _first(synthetic_copy, "train", "NORMAL")
    good = film.read_bytes()
    stat = film.stat()
    film.write_bytes(b"\0" * len(good))
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=rf"{film.name}"):
        make_dm(synthetic_copy, cache_dir=cache).setup("fit")

    film.write_bytes(good)
    os.utime(film, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    dm = make_dm(synthetic_copy, cache_dir=cache)
    dm.setup("fit")
    assert film in {record.path for record in dm.split_records["train"]}
    assert dm.skipped == []


def test_skip_mode_skips_an_unreadable_file_in_the_duplicate_check_too(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    """Row: an unreadable file with the same size as another made the duplicate check raise."""
    film = _first(synthetic_copy, "train", "NORMAL")
    twin = film.with_name("IM-0999-0001.jpeg")
    twin.write_bytes(b"\xff" * film.stat().st_size)  # same size: the duplicate check reads both
    make_unreadable(film)
    if os.geteuid() == 0:
        twin.write_bytes(b"")  # /proc/self/mem has size 0; keep the sizes equal
    with pytest.raises(DataError, match="cannot read"):
        make_dm(synthetic_copy).setup("fit")
    dm = make_dm(synthetic_copy, on_bad_image="skip", report_dir=tmp_path / "run")
    dm.setup("fit")
    skipped = {record.path for record, _ in dm.skipped}
    assert {film, twin} <= skipped
    rows = list(csv.DictReader((tmp_path / "run" / "skipped.csv").open()))
    assert {str(film), str(twin)} <= {row["file"] for row in rows}


def test_skipping_that_empties_a_validation_class_fails_at_setup(synthetic_copy: Path) -> None:
    """Row: trained every epoch, then failed at the threshold; now stops before training."""
    for film in (synthetic_copy / "val" / "NORMAL").glob("*.jpeg"):
        film.write_bytes(b"")
    with pytest.raises(DataError, match=r"split 'val' .* has no NORMAL images after skipping"):
        make_dm(synthetic_copy, on_bad_image="skip").setup("fit")


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_the_console_script_stops_before_training_when_skipping_empties_a_class(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    for film in (synthetic_copy / "val" / "PNEUMONIA").glob("*.jpeg"):
        film.write_bytes(b"")
    script = Path(sys.executable).with_name("cxrnet-train")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "cxrnet.cli.train"]
    done = subprocess.run(
        [
            *command,
            "debug=fast",
            f"data.root={synthetic_copy}",
            "data.on_bad_image=skip",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=os.environ | {"CXRNET_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert "has no PNEUMONIA images after skipping" in done.stderr
    assert not list((tmp_path / "logs").glob("*/runs/*/checkpoints/*.ckpt"))


# ------------------------------------------------------------------------------ the folders


def test_a_dangling_symlink_is_reported_as_ignored(synthetic_copy: Path, tmp_path: Path) -> None:
    """Row: a link whose target is gone was dropped silently."""
    link = synthetic_copy / "train" / "PNEUMONIA" / "person999_bacteria_1.jpeg"
    link.symlink_to(tmp_path / "moved-away.jpeg")
    dm = make_dm(synthetic_copy, report_dir=tmp_path / "run")
    dm.setup("fit")
    rows = list(csv.DictReader((tmp_path / "run" / "ignored.csv").open()))
    (row,) = [row for row in rows if row["file"] == str(link)]
    assert "broken symbolic link" in row["reason"] and "moved-away.jpeg" in row["reason"]


def test_a_file_name_that_is_not_utf8_trains_and_is_reported(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    """Row: a UnicodeEncodeError from the cache index writer, the file not named."""
    folder = os.fsencode(synthetic_copy / "train" / "NORMAL")
    odd = folder + b"/IM-0998-0001-\xff.jpeg"
    shutil.copyfile(_first(synthetic_copy, "train", "NORMAL"), odd)
    with open(odd, "ab") as handle:
        handle.write(b"\0")  # not byte-identical to its source
    odd_path = Path(os.fsdecode(odd))
    for _ in range(2):  # building the cache, then reusing it
        dm = make_dm(synthetic_copy, cache_dir=tmp_path / "cache", report_dir=tmp_path / "run")
        dm.setup("fit")
        assert odd_path in {record.path for record in dm.split_records["train"]}
    listed = (tmp_path / "run" / "split.csv").read_bytes()
    assert b"IM-0998-0001-\xff.jpeg" in listed


def test_an_image_below_the_minimum_side_is_a_bad_image(synthetic_copy: Path) -> None:
    """Row: a 1x1 image was accepted and stretched to the training size."""
    tiny = synthetic_copy / "train" / "NORMAL" / "IM-0997-0001.png"
    Image.fromarray(np.full((1, 1), 128, dtype=np.uint8)).save(tiny)
    with pytest.raises(DataError, match=rf"{tiny.name}: image is only 1x1 pixels"):
        make_dm(synthetic_copy).setup("fit")
    dm = make_dm(synthetic_copy, on_bad_image="skip")
    dm.setup("fit")
    ((record, reason),) = dm.skipped
    assert record.path == tiny and f"at least {MIN_IMAGE_SIDE} pixels" in reason


def test_a_relative_manifest_is_stored_absolute_for_later_consumers(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Row: a relative ``data.root`` manifest was stored relative, so cxrnet-eval run from
    another folder failed, naming a ``data.manifest`` key that does not exist."""
    work = tmp_path / "work"
    work.mkdir()
    with (work / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for split in ("train", "val"):
            for label in ("NORMAL", "PNEUMONIA"):
                for film in sorted((synthetic_root / split / label).glob("*.jpeg")):
                    writer.writerow([film, label, split])
    monkeypatch.chdir(work)
    dm = make_dm("data.csv")
    assert dm.hparams.root == str(work / "data.csv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    again = ChestXRayDataModule(**dm.hparams)  # as cxrnet-eval rebuilds it from a checkpoint
    again.setup("fit")
    assert len(again.split_records["train"]) > 0
    with pytest.raises(DataError, match=r"data\.root=.*elsewhere/data\.csv: no such manifest"):
        make_dm("data.csv").setup("fit")


# ------------------------------------------------------------------------- a killed build


_BUILD = """
import sys
from pathlib import Path
import numpy as np
from PIL import Image
from cxrnet.data.cache import load_images
from cxrnet.data.decode import DecodeParams
from cxrnet.data.records import make_record
root = Path(sys.argv[1])
film = root / "IM-0001-0001.jpeg"
rng = np.random.default_rng(0)
Image.fromarray(rng.integers(0, 255, (1200, 1200), dtype=np.uint8)).save(film, quality=90)
print("building", flush=True)
load_images([make_record(film, 0, "train")] * 20000, DecodeParams(64), cache_dir=root / "cache",
            num_workers=2, progress=False)
"""


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="forked workers: Linux only")
def test_kill_9_during_the_first_cache_build_leaves_no_worker_behind(tmp_path: Path) -> None:
    """Row: the forked decode workers stayed alive, blocked, ~500 MB resident."""
    build = subprocess.Popen(
        [sys.executable, "-c", _BUILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert build.stdout is not None and build.stdout.readline().strip() == "building"
        deadline = time.monotonic() + 60
        while len(_children(build.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        workers = _children(build.pid)
        assert len(workers) == 2 and build.poll() is None
    finally:
        build.send_signal(signal.SIGKILL)
        build.wait()
    deadline = time.monotonic() + 10
    while any(map(_running, workers)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in workers if _running(pid)]
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert left == []


@pytest.mark.slow
def test_cxrnet_eval_from_another_folder_reads_a_relative_manifest_run(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """Row, end to end: train on ``data.root=data.csv`` (relative), evaluate from elsewhere."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir()
    elsewhere.mkdir()
    with (work / "data.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        for split in ("train", "val", "test"):
            for label in ("NORMAL", "PNEUMONIA"):
                for film in sorted((synthetic_root / split / label).glob("*.jpeg")):
                    writer.writerow([film, label, split])
    env = os.environ | {"CXRNET_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}

    def console(name: str, cwd: Path, *overrides: str) -> subprocess.CompletedProcess[str]:
        script = Path(sys.executable).with_name(name)
        module = {"cxrnet-train": "cxrnet.cli.train", "cxrnet-eval": "cxrnet.cli.evaluate"}
        command = [str(script)] if script.exists() else [sys.executable, "-m", module[name]]
        return subprocess.run(
            [*command, *overrides, f"paths.log_dir={tmp_path / 'logs'}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )

    trained = console(
        "cxrnet-train", work, "debug=fast", "data.root=data.csv", "trainer.max_epochs=1"
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    (checkpoint,) = (tmp_path / "logs").glob("*/runs/*/checkpoints/epoch_*.ckpt")
    evaluated = console("cxrnet-eval", elsewhere, f"ckpt_path={checkpoint}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "test/auroc:" in evaluated.stdout
