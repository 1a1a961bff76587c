"""A first image cache shared out over several tasks (``cxrnet-cache shard=i/n``): the
assembled cache equals the one a single process builds, byte for byte."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from helpers.console import console_script, run_script, script_env

from cxrnet.data.cache import load_images
from cxrnet.data.cache_entry import COMPLETE_FILE
from cxrnet.data.cache_shards import Shard, build_shard, parts_folder
from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.decode import DecodeParams
from cxrnet.user_errors import ConfigError, DataError

PARAMS = DecodeParams(image_size=32)


def _films(root: Path) -> list:
    return ChestXRayDataModule(root, image_size=32).films_to_decode()


def _files(entry: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(entry.iterdir())}


def _single_build(films: list, cache_dir: Path) -> Path:
    loaded = load_images(films, PARAMS, cache_dir=cache_dir, on_bad_image="skip", progress=False)
    assert loaded.cache_path is not None
    return loaded.cache_path


@pytest.mark.parametrize("count", [2, 3])
def test_parts_assembled_equal_one_process_build_byte_for_byte(
    synthetic_copy: Path, tmp_path: Path, count: int
) -> None:
    # Bad films in two parts: each part keeps its decodable films only, as one build does.
    films_dir = synthetic_copy / "train" / "NORMAL"
    (films_dir / "aa-empty.jpeg").write_bytes(b"")
    (synthetic_copy / "test" / "PNEUMONIA" / "zz-garbage.jpeg").write_bytes(b"not a film")
    films = _films(synthetic_copy)
    single = _single_build(films, tmp_path / "single")

    outcomes = [
        build_shard(films, PARAMS, tmp_path / "shards", Shard(i, count), progress=False)
        for i in range(count)
    ]
    assert [o.published for o in outcomes] == [False] * (count - 1) + [True]
    assert sum(o.decoded for o in outcomes) == len(films)
    entry = outcomes[-1].entry
    assert entry.name == single.name
    assert _files(entry) == _files(single)
    assert not parts_folder(entry).exists()
    # A task started after the cache was published decodes nothing.
    late = build_shard(films, PARAMS, tmp_path / "shards", Shard(0, count), progress=False)
    assert (late.decoded, late.published, late.complete) == (0, False, True)
    assert not parts_folder(entry).exists()


def test_a_run_that_needs_the_cache_mid_build_finishes_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    films = _films(synthetic_root)
    cache = tmp_path / "cache"
    first = build_shard(films, PARAMS, cache, Shard(1, 3), progress=False)
    assert not first.complete
    # Part 1 is done; parts 0 and 2 are queued: the run decodes them and publishes.
    loaded = load_images(films, PARAMS, cache_dir=cache, progress=False)
    assert loaded.cache_path == first.entry and not loaded.from_cache
    assert _files(first.entry) == _files(_single_build(films, tmp_path / "single"))
    assert not parts_folder(first.entry).exists()
    # The queued tasks then start and find the cache built.
    late = build_shard(films, PARAMS, cache, Shard(2, 3), progress=False)
    assert (late.decoded, late.complete) == (0, True)


def test_a_run_waits_for_a_part_a_task_is_decoding(synthetic_root: Path, tmp_path: Path) -> None:
    from filelock import FileLock

    films = _films(synthetic_root)
    cache = tmp_path / "cache"
    parts = parts_folder(build_shard(films, PARAMS, cache, Shard(0, 2), progress=False).entry)
    # Task 1 is decoding its part: it holds that part's lock (cxrnet.publish.build_once).
    lock = FileLock(str(parts / ".part-1-of-2.lock"))
    lock.acquire()
    done: list = []
    run = threading.Thread(
        target=lambda: done.append(load_images(films, PARAMS, cache_dir=cache, progress=False))
    )
    run.start()
    run.join(timeout=1.0)
    assert run.is_alive(), "the run did not wait for the task decoding part 1"
    lock.release()
    run.join(timeout=60)
    assert _files(done[0].cache_path) == _files(_single_build(films, tmp_path / "single"))


@pytest.mark.parametrize("text", ["2/2", "-1/2", "1", "a/b", "0/0"])
def test_a_bad_shard_is_named_with_the_fix(text: str) -> None:
    with pytest.raises(ConfigError, match=rf"shard='{text}' must be i/n .*SLURM_ARRAY_TASK_ID"):
        Shard.parse(text)


def test_tasks_that_disagree_on_the_number_of_parts_are_stopped(
    synthetic_root: Path, tmp_path: Path
) -> None:
    films = _films(synthetic_root)
    build_shard(films, PARAMS, tmp_path, Shard(0, 2), progress=False)
    with pytest.raises(DataError, match=r"in 2 parts.*part 0 of 3.*shard=i/2, or delete"):
        build_shard(films, PARAMS, tmp_path, Shard(0, 3), progress=False)


@pytest.mark.slow
def test_the_console_script_builds_the_cache_a_training_run_reuses(
    synthetic_root: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    args = [f"data.root={synthetic_root}", "data.image_size=32", f"data.cache_dir={cache}"]
    args += [f"paths.log_dir={tmp_path / 'logs'}"]
    bad = run_script("cxrnet-cache", [*args, "shard=2/2"], tmp_path)
    assert bad.returncode == 2 and "shard='2/2' must be i/n" in bad.stderr
    first = run_script("cxrnet-cache", [*args, "shard=0/2"], tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "shard 0/2: decoded 56 films into" in first.stdout
    # Without a shard, as the step after the array (--dependency): it finishes the build.
    last = run_script("cxrnet-cache", args, tmp_path)
    assert last.returncode == 0, last.stderr[-3000:]
    (entry,) = (p for p in cache.iterdir() if (p / COMPLETE_FILE).is_file())
    assert f"the cache {entry} is built: 112 films" in last.stdout
    assert not parts_folder(entry).exists()
    # A run with the same data settings finds its films in this cache and decodes none.
    datamodule = ChestXRayDataModule(synthetic_root, image_size=32, cache_dir=cache)
    datamodule.setup("fit")
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".")) == sorted(
        [entry.name, "digests.tsv", "listings"]
    )


@pytest.mark.slurm
@pytest.mark.slow
def test_a_two_task_job_array_builds_the_cache_one_process_builds(
    slurm_cluster, synthetic_root: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    script = tmp_path / "cache.sh"
    command = [
        *console_script("cxrnet-cache"),
        f"data.root={synthetic_root}",
        "data.image_size=32",
        f"data.cache_dir={cache}",
        f"paths.log_dir={tmp_path / 'logs'}",
        "shard=$SLURM_ARRAY_TASK_ID/2",
    ]
    script.write_text("#!/bin/bash\n" + " ".join(command) + "\n")
    slurm_cluster.env = script_env(tmp_path) | {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    job = slurm_cluster.sbatch(
        script,
        "--array=0-1",
        "--cpus-per-task=1",
        f"--chdir={tmp_path}",
        f"--output={tmp_path}/slurm-%A_%a.out",
    )
    for task in ("0", "1"):
        info = slurm_cluster.wait(f"{job}_{task}", ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"))
        output = "\n".join(p.read_text()[-3000:] for p in tmp_path.glob("slurm-*.out"))
        assert info["JobState"] == "COMPLETED", output + slurm_cluster.logs()
    outputs = [p.read_text() for p in sorted(tmp_path.glob("slurm-*.out"))]
    assert len(outputs) == 2 and all("decoded 56 films" in text for text in outputs)
    assert sum("published the cache" in text for text in outputs) == 1, outputs
    (entry,) = (p for p in cache.iterdir() if (p / COMPLETE_FILE).is_file())
    assert not parts_folder(entry).exists()
    single = _single_build(_films(synthetic_root), tmp_path / "single")
    assert entry.name == single.name
    assert _files(entry) == _files(single)
    shutil.rmtree(tmp_path / "single")
