"""The decode-once cache: what it keys on, when it rebuilds, bad files, crashes, parallel jobs."""

from __future__ import annotations

import csv
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Collection
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import cxrnet.data.cache_entry as cache_module
from cxrnet.data.cache import LoadedImages, load_images
from cxrnet.data.cache_entry import cache_key
from cxrnet.data.decode import DecodeParams, decode
from cxrnet.data.records import Record, make_record
from cxrnet.user_errors import DataError

PARAMS = DecodeParams(image_size=32)


def picture(seed: int, width: int = 72, height: int = 56) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.linspace(30, 220, width, dtype=np.float32)[None, :] + rng.normal(0, 12, (height, 1))
    return np.clip(base, 0, 255).astype(np.uint8)


def make_records(root: Path, count: int = 6, start: int = 0) -> list[Record]:
    """``count`` small JPEGs, alternating NORMAL and PNEUMONIA, named the Kermany way."""
    records = []
    for i in range(start, start + count):
        label = i % 2
        folder = root / ("PNEUMONIA" if label else "NORMAL")
        folder.mkdir(parents=True, exist_ok=True)
        name = f"person{i}_bacteria_{i}.jpeg" if label else f"IM-{i:04d}-0001.jpeg"
        path = folder / name
        Image.fromarray(picture(i)).save(path, quality=95)
        records.append(make_record(path, label, "train"))
    return records


def entries(cache_dir: Path) -> list[Path]:
    """Published cache folders (temporary builds and lock files start with a dot)."""
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def leftovers(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and p.name.startswith("."))


def count_decodes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []

    def counting(path: Path, params: DecodeParams) -> np.ndarray:
        calls.append(Path(path))
        return decode(path, params)

    monkeypatch.setattr(cache_module, "decode", counting)
    return calls


def forbid_decoding(monkeypatch: pytest.MonkeyPatch, retried: Collection[str] = ()) -> None:
    """Decoding fails the test, except for ``retried`` file names (files that failed before)."""
    real = cache_module.decode

    def refuse(path: Path, params: DecodeParams) -> np.ndarray:
        if Path(path).name in retried:
            return real(path, params)
        raise AssertionError(f"decoded {path} although the cache should have been reused")

    monkeypatch.setattr(cache_module, "decode", refuse)


def expected(records: list[Record], params: DecodeParams = PARAMS) -> np.ndarray:
    return np.stack([decode(r.path, params) for r in records])


# ------------------------------------------------------------------------------ in memory


def test_in_memory_decodes_everything_and_writes_nothing(tmp_path: Path) -> None:
    records = make_records(tmp_path / "data")
    before = sorted(tmp_path.rglob("*"))
    loaded = load_images(records, PARAMS, cache_dir=None, progress=False)
    assert loaded.images.shape == (6, 32, 32) and loaded.images.dtype == np.uint8
    assert loaded.records == records and loaded.skipped == []
    assert loaded.cache_path is None and not loaded.from_cache
    assert np.array_equal(loaded.images, expected(records))
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("cached", [False, True], ids=["memory", "cache"])
def test_worker_processes_give_the_same_pixels(tmp_path: Path, cached: bool) -> None:
    records = make_records(tmp_path / "data", count=10)
    cache_dir = tmp_path / "cache" if cached else None
    parallel = load_images(records, PARAMS, cache_dir=cache_dir, num_workers=2, progress=False)
    assert np.array_equal(parallel.images, expected(records))
    assert parallel.records == records


def test_opencv_threads_are_restored_after_a_parallel_build(tmp_path: Path) -> None:
    records = make_records(tmp_path / "data", count=4)
    before = cv2.getNumThreads()
    load_images(records, PARAMS, cache_dir=None, num_workers=2, progress=False)
    assert cv2.getNumThreads() == before


_BUSY_OPENCV_THEN_WORKERS = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import cv2, numpy as np
    from cxrnet.data.cache import load_images
    from cxrnet.data.decode import DecodeParams
    from cxrnet.data.records import make_record

    if __name__ == "__main__":
        records = [make_record(p, 0, "train") for p in sorted(Path(sys.argv[1]).rglob("*.jpeg"))]
        coarse = np.random.default_rng(0).normal(120, 40, (45, 55)).astype(np.float32)
        for _ in range(6):
            # A large threaded resize leaves OpenCV's pool in the state a fork used to copy
            # into workers that then hung (every run, before the fix).
            cv2.resize(coarse, (2100, 1700), interpolation=cv2.INTER_CUBIC)
            load_images(records, DecodeParams(32), cache_dir=None, num_workers=2, progress=False)
        print("done")
    """
)


def test_workers_forked_after_opencv_ran_threads_do_not_hang(tmp_path: Path) -> None:
    # A timeout turns a hang into a failure.
    make_records(tmp_path / "data", count=8)
    finished = subprocess.run(
        [sys.executable, "-c", _BUSY_OPENCV_THEN_WORKERS, str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 0, finished.stderr
    assert finished.stdout.strip() == "done"


def test_no_records_give_an_empty_array(tmp_path: Path) -> None:
    loaded = load_images([], PARAMS, cache_dir=tmp_path / "cache", progress=False)
    assert loaded.images.shape == (0, 32, 32) and loaded.records == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"on_bad_image": "ignore"}, "on_bad_image must be 'error' or 'skip', got 'ignore'"),
        ({"num_workers": -1}, "num_workers must be an integer >= 0"),
    ],
)
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str) -> None:
    records = make_records(tmp_path / "data", count=1)
    with pytest.raises(ValueError, match=message):
        load_images(records, PARAMS, cache_dir=None, progress=False, **kwargs)


def test_progress_bar_shown_while_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = make_records(tmp_path / "data", count=3)
    load_images(records, PARAMS, cache_dir=tmp_path / "cache")
    assert "decoding images" in capsys.readouterr().err


# --------------------------------------------------------------------------- build, reuse


def test_first_use_builds_the_cache_files(tmp_path: Path) -> None:
    records = make_records(tmp_path / "data")
    loaded = load_images(records, PARAMS, cache_dir=tmp_path / "cache", progress=False)
    assert not loaded.from_cache
    assert loaded.cache_path == tmp_path / "cache" / cache_key(records, PARAMS)
    assert {p.name for p in loaded.cache_path.iterdir()} == {
        "images.npy",
        "index.csv",
        "meta.json",
        "COMPLETE",
    }
    assert np.array_equal(np.load(loaded.cache_path / "images.npy"), expected(records))


def test_unchanged_inputs_reuse_the_cache_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = make_records(tmp_path / "data")
    first = load_images(records, PARAMS, cache_dir=tmp_path / "cache", progress=False)
    forbid_decoding(monkeypatch)
    again = load_images(records, PARAMS, cache_dir=tmp_path / "cache", progress=False)
    assert again.from_cache and again.cache_path == first.cache_path
    assert isinstance(again.images, np.memmap)
    assert np.array_equal(again.images, first.images)
    assert again.records == records


def test_index_lists_every_record_with_its_stamp(tmp_path: Path) -> None:
    records = make_records(tmp_path / "data", count=4)
    loaded = load_images(records, PARAMS, cache_dir=tmp_path / "cache", progress=False)
    with open(loaded.cache_path / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [str(r.path.resolve()) for r in records]
    assert [int(row["label"]) for row in rows] == [r.label for r in records]
    assert [row["patient"] for row in rows] == [r.patient for r in records]
    assert [row["subtype"] for row in rows] == [r.subtype for r in records]
    assert [int(row["size"]) for row in rows] == [r.path.stat().st_size for r in records]
    assert [int(row["mtime_ns"]) for row in rows] == [r.path.stat().st_mtime_ns for r in records]
    assert [row["row"] for row in rows] == ["0", "1", "2", "3"]


def test_records_from_several_roots(tmp_path: Path) -> None:
    records = make_records(tmp_path / "a", count=3) + make_records(tmp_path / "b", 3, start=3)
    loaded = load_images(records, PARAMS, cache_dir=tmp_path / "cache", progress=False)
    assert np.array_equal(loaded.images, expected(records))


def _touch(records: list[Record]) -> list[Record]:
    stat = records[0].path.stat()
    os.utime(records[0].path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    return records


def _grow(records: list[Record]) -> list[Record]:
    # A different size with the very same mtime: the size alone must change the key.
    path = records[0].path
    stat = path.stat()
    Image.fromarray(picture(99, width=90)).save(path, quality=95)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size != stat.st_size
    return records


def _rename(records: list[Record]) -> list[Record]:
    # Same bytes, size and mtime under another name: the path alone must change the key, or a
    # renamed (or relabelled-by-moving) file would be read back from the wrong row.
    old = records[0].path
    new = old.with_name(f"IM-9999-0001{old.suffix}")
    stat = old.stat()
    old.rename(new)
    assert (new.stat().st_size, new.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    return [make_record(new, records[0].label, "train"), *records[1:]]


def _add(records: list[Record]) -> list[Record]:
    return records + make_records(records[0].path.parents[1], count=1, start=len(records))


CHANGES: dict[str, tuple[Callable[[list[Record]], list[Record]], DecodeParams]] = {
    "file touched": (_touch, PARAMS),
    "file size": (_grow, PARAMS),
    "file renamed": (_rename, PARAMS),
    "file added": (_add, PARAMS),
    "image size": (lambda r: r, DecodeParams(image_size=40)),
    "resize mode": (lambda r: r, DecodeParams(image_size=32, resize="letterbox")),
    "equalize": (lambda r: r, DecodeParams(image_size=32, equalize=True)),
    "interpolation": (lambda r: r, DecodeParams(image_size=32, interpolation="bilinear")),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_key_change_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str
) -> None:
    records = make_records(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    first = load_images(records, PARAMS, cache_dir=cache_dir, progress=False)
    alter, params = CHANGES[change]
    changed = alter(records)
    calls = count_decodes(monkeypatch)
    second = load_images(changed, params, cache_dir=cache_dir, progress=False)
    assert not second.from_cache
    assert len(calls) == len(changed)  # everything decoded again, into a new folder
    assert second.cache_path != first.cache_path
    assert len(entries(cache_dir)) == 2
    assert np.array_equal(second.images, expected(changed, params))


# -------------------------------------------------------------------------- crashes, races


def test_exception_mid_build_leaves_nothing_to_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = make_records(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    calls = count_decodes(monkeypatch)
    counting = cache_module.decode

    def failing(path: Path, params: DecodeParams) -> np.ndarray:
        if len(calls) == 3:
            raise RuntimeError("disk vanished")
        return counting(path, params)

    monkeypatch.setattr(cache_module, "decode", failing)
    with pytest.raises(RuntimeError, match="disk vanished"):
        load_images(records, PARAMS, cache_dir=cache_dir, progress=False)
    assert entries(cache_dir) == [] and leftovers(cache_dir) == []
    monkeypatch.setattr(cache_module, "decode", decode)
    loaded = load_images(records, PARAMS, cache_dir=cache_dir, progress=False)
    assert not loaded.from_cache
    assert np.array_equal(loaded.images, expected(records))


_SLOW_BUILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import cxrnet.data.cache_entry as cache
    from cxrnet.data.cache import load_images
    from cxrnet.data.decode import DecodeParams
    from cxrnet.data.records import make_record

    real = cache.decode
    def slow(path, params):
        time.sleep(0.4)
        return real(path, params)
    cache.decode = slow
    data, cache_dir = Path(sys.argv[1]), Path(sys.argv[2])
    records = [make_record(p, 0, "train") for p in sorted(data.rglob("*.jpeg"))]
    load_images(records, DecodeParams(image_size=32), cache_dir=cache_dir, progress=False)
    """
)


def test_killed_build_is_never_read_as_complete(tmp_path: Path) -> None:
    make_records(tmp_path / "data", count=8)
    records = [make_record(p, 0, "train") for p in sorted((tmp_path / "data").rglob("*.jpeg"))]
    cache_dir = tmp_path / "cache"
    builder = subprocess.Popen(
        [sys.executable, "-c", _SLOW_BUILD, str(tmp_path / "data"), str(cache_dir)]
    )
    try:
        deadline = time.monotonic() + 60
        while not any(cache_dir.glob(".*.partial-*/images.npy")):
            assert builder.poll() is None, "the build ended before it could be killed"
            assert time.monotonic() < deadline, "the build never started"
            time.sleep(0.05)
        time.sleep(0.5)  # a few images in, far from done
    finally:
        builder.kill()
        builder.wait()
    assert entries(cache_dir) == []
    assert leftovers(cache_dir)  # the half-written build is still there...
    loaded = load_images(records, PARAMS, cache_dir=cache_dir, progress=False)
    assert not loaded.from_cache  # ...but it is rebuilt, not read
    assert np.array_equal(loaded.images, expected(records))
    assert leftovers(cache_dir) == []  # and the dead build's files were cleared


def _load_in_child(
    records: list[Record],
    cache_dir: Path,
    barrier: multiprocessing.synchronize.Barrier,
    results: multiprocessing.Queue,
) -> None:
    barrier.wait()
    loaded = load_images(records, PARAMS, cache_dir=cache_dir, num_workers=0, progress=False)
    results.put((loaded.from_cache, int(np.asarray(loaded.images, dtype=np.int64).sum())))


def test_concurrent_jobs_build_once(tmp_path: Path) -> None:
    records = make_records(tmp_path / "data", count=12)
    cache_dir = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")  # separate interpreters, like sweep jobs
    jobs = 3
    barrier = context.Barrier(jobs)
    results = context.Queue()
    processes = [
        context.Process(target=_load_in_child, args=(records, cache_dir, barrier, results))
        for _ in range(jobs)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    assert sorted(from_cache for from_cache, _ in outcomes) == [False, True, True]
    assert len({checksum for _, checksum in outcomes}) == 1
    assert len(entries(cache_dir)) == 1 and leftovers(cache_dir) == []


# ------------------------------------------------------------------------------ bad files


def _exif_rotated(path: Path) -> None:
    stored = np.full((40, 80), 20, dtype=np.uint8)
    stored[:, :40] = 230  # bright left half; orientation 6 turns it into the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(path, quality=95, exif=exif)


def _every_kind(root: Path) -> tuple[list[Record], dict[str, str]]:
    """Readable files of every kind plus three bad ones; returns records and bad name -> reason."""
    root.mkdir(parents=True)
    gray = Image.fromarray(picture(1))
    makers: dict[str, Callable[[Path], None]] = {
        "gray.jpeg": lambda p: gray.save(p, quality=95),
        "rgb.jpeg": lambda p: gray.convert("RGB").save(p, quality=95),
        "rgba.png": lambda p: gray.convert("RGBA").save(p),
        "la.png": lambda p: gray.convert("LA").save(p),
        "cmyk.jpeg": lambda p: gray.convert("CMYK").save(p, quality=95),
        "sixteen.png": lambda p: Image.fromarray(picture(2).astype(np.uint16) * 200).save(p),
        "rotated.jpeg": _exif_rotated,
    }
    for name, make in makers.items():
        make(root / name)
    whole = (root / "gray.jpeg").read_bytes()
    (root / "truncated.jpeg").write_bytes(whole[: len(whole) // 2])
    (root / "garbage.jpeg").write_bytes(os.urandom(2048))
    (root / "empty.jpeg").write_bytes(b"")
    bad = {"truncated.jpeg": "truncated", "garbage.jpeg": "not an image", "empty.jpeg": "empty"}
    names = ["gray.jpeg", "truncated.jpeg", "rgb.jpeg", "rgba.png", "garbage.jpeg", "la.png"]
    names += ["cmyk.jpeg", "empty.jpeg", "sixteen.png", "rotated.jpeg"]
    return [make_record(root / name, 0, "train") for name in names], bad


@pytest.mark.parametrize("workers", [0, 2])
def test_error_mode_lists_every_bad_file_after_trying_all(tmp_path: Path, workers: int) -> None:
    records, bad = _every_kind(tmp_path / "data")
    with pytest.raises(DataError) as caught:
        load_images(
            records, PARAMS, cache_dir=tmp_path / "cache", num_workers=workers, progress=False
        )
    message = str(caught.value)
    assert message.startswith(f"3 of {len(records)} image files cannot be decoded")
    for name, reason in bad.items():
        line = next(line for line in message.splitlines() if name in line)
        assert str(tmp_path / "data" / name) in line and reason in line
    assert "on_bad_image='skip'" in message


@pytest.mark.parametrize("cached", [False, True], ids=["memory", "cache"])
def test_skip_mode_keeps_every_readable_kind_and_reports_each_bad_file(
    tmp_path: Path, cached: bool
) -> None:
    records, bad = _every_kind(tmp_path / "data")
    cache_dir = tmp_path / "cache" if cached else None
    loaded = load_images(records, PARAMS, cache_dir=cache_dir, on_bad_image="skip", progress=False)
    assert [r.path.name for r, _ in loaded.skipped] == list(bad)
    for (_, reason), expected_reason in zip(loaded.skipped, bad.values(), strict=True):
        assert expected_reason in reason
    good = [r for r in records if r.path.name not in bad]
    assert loaded.records == good
    assert loaded.images.shape == (len(good), 32, 32)
    assert np.array_equal(loaded.images, expected(good))
    rotated = loaded.images[[r.path.name for r in good].index("rotated.jpeg")]
    assert rotated[:10].mean() > 200 and rotated[-10:].mean() < 40  # upright


def test_reused_cache_reports_the_same_skips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    records, bad = _every_kind(tmp_path / "data")
    cache_dir = tmp_path / "cache"
    first = load_images(records, PARAMS, cache_dir=cache_dir, on_bad_image="skip", progress=False)
    # Only the files that failed are tried again (a failure is not cached as their verdict).
    forbid_decoding(monkeypatch, retried=bad)
    again = load_images(records, PARAMS, cache_dir=cache_dir, on_bad_image="skip", progress=False)
    assert again.from_cache
    assert len(again.skipped) == len(bad)
    assert again.skipped == first.skipped and again.records == first.records
    assert np.array_equal(again.images, first.images)
    with pytest.raises(DataError, match="3 of 10 image files cannot be decoded"):
        load_images(records, PARAMS, cache_dir=cache_dir, progress=False)


def test_every_file_bad_gives_an_empty_cache_in_skip_mode(tmp_path: Path) -> None:
    root = tmp_path / "data"
    root.mkdir()
    records = []
    for i in range(2):
        (root / f"bad{i}.jpeg").write_bytes(b"")
        records.append(make_record(root / f"bad{i}.jpeg", 0, "train"))
    loaded: LoadedImages = load_images(
        records, PARAMS, cache_dir=tmp_path / "cache", on_bad_image="skip", progress=False
    )
    assert loaded.images.shape == (0, 32, 32) and len(loaded.skipped) == 2
