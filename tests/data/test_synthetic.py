"""The built-in synthetic data set: layout, names, patients, determinism, caching, atomicity."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from pathlib import Path

import cv2
import pytest

from cxrnet.cli.synthetic import main
from cxrnet.data import synthetic
from cxrnet.data.discovery import discover
from cxrnet.data.records import CLASS_NAMES, SPLIT_NAMES, patient_from_name, subtype_from_name
from cxrnet.data.synthetic import SyntheticSpec, ensure_synthetic, generate_synthetic

SMALL = SyntheticSpec(n_train=40, n_val=12, n_test=16, min_size=48, max_size=96, seed=3)


def _files(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*.jpeg"))}


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", SMALL)


def test_layout_counts_and_class_ratio(small_set: Path) -> None:
    for split, n in SMALL.split_sizes().items():
        normal = list((small_set / split / "NORMAL").glob("*.jpeg"))
        pneumonia = list((small_set / split / "PNEUMONIA").glob("*.jpeg"))
        assert len(normal) + len(pneumonia) == n
        assert len(pneumonia) == round(n * SMALL.pneumonia_fraction)  # 1 normal : 3 pneumonia
    marker = json.loads((small_set / synthetic.MARKER_NAME).read_text())
    assert marker["spec"]["seed"] == SMALL.seed


def test_discovery_reads_it_with_subtypes_and_patients(small_set: Path) -> None:
    records = discover(small_set)
    assert set(records) == set(SPLIT_NAMES)
    assert sum(len(split) for split in records.values()) == 40 + 12 + 16
    subtypes = {record.subtype for split in records.values() for record in split}
    assert subtypes == {"normal", "bacteria", "virus"}


def test_names_follow_the_real_convention(small_set: Path) -> None:
    normal_name = re.compile(r"^(NORMAL2-)?IM-\d{4}-\d{4}\.jpeg$")
    pneumonia_name = re.compile(r"^person\d+_(bacteria|virus)_\d+\.jpeg$")
    seen: set[str] = set()
    for split in SPLIT_NAMES:
        for label, class_name in enumerate(CLASS_NAMES):
            for path in (small_set / split / class_name).glob("*.jpeg"):
                pattern = normal_name if label == 0 else pneumonia_name
                assert pattern.match(path.name), path.name
                seen.add(subtype_from_name(path.name, label))
                if path.name.startswith("NORMAL2-"):
                    seen.add("NORMAL2 prefix")
    assert seen == {"normal", "bacteria", "virus", "NORMAL2 prefix"}


def test_patients_have_several_films_and_stay_in_one_split(small_set: Path) -> None:
    splits_of: dict[str, set[str]] = defaultdict(set)
    films_of: dict[str, int] = defaultdict(int)
    for path in small_set.rglob("*.jpeg"):
        patient = patient_from_name(path.name)
        splits_of[patient].add(path.parts[-3])
        films_of[patient] += 1
    assert all(len(splits) == 1 for splits in splits_of.values())
    assert max(films_of.values()) >= 2
    assert len(films_of) < sum(films_of.values())
    # A patient's films carry one subtype: the key groups bacteria and virus separately.
    assert any(patient.endswith("_bacteria") for patient in films_of)
    assert any(patient.endswith("_virus") for patient in films_of)


def test_image_sizes_and_aspect_ratios_vary(small_set: Path) -> None:
    shapes = {
        cv2.imread(str(path), cv2.IMREAD_GRAYSCALE).shape for path in small_set.rglob("*.jpeg")
    }
    assert len(shapes) > 10
    for height, width in shapes:
        assert SMALL.min_size <= height <= SMALL.max_size
        assert SMALL.min_size <= width <= SMALL.max_size
    assert any(h > w for h, w in shapes) and any(w > h for h, w in shapes)


def test_films_look_like_radiographs(small_set: Path) -> None:
    # Bright mediastinum in the middle, darker lung fields either side, dark air at the edges.
    for path in (small_set / "train" / "NORMAL").glob("*.jpeg"):
        image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        image = cv2.resize(image, (100, 100), interpolation=cv2.INTER_AREA).astype(float)
        middle = image[35:60, 45:55].mean()
        lungs = min(image[35:60, 20:35].mean(), image[35:60, 65:80].mean())
        corners = max(image[:5, :5].mean(), image[:5, -5:].mean())
        assert lungs < middle - 20, path.name
        assert corners < lungs, path.name


def test_same_seed_gives_identical_bytes_other_seed_differs(
    small_set: Path, tmp_path: Path
) -> None:
    again = generate_synthetic(tmp_path / "again", SMALL)
    assert _files(again) == _files(small_set)
    other = generate_synthetic(tmp_path / "other", SyntheticSpec(**{**vars(SMALL), "seed": 4}))
    assert set(_files(other).values()).isdisjoint(_files(small_set).values())


def test_parallel_workers_give_the_same_files(small_set: Path, tmp_path: Path) -> None:
    parallel = generate_synthetic(tmp_path / "parallel", SMALL, workers=2)
    assert _files(parallel) == _files(small_set)


def test_refuses_a_non_empty_folder_but_accepts_an_empty_one(tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="busy"):
        generate_synthetic(busy, SMALL)
    assert (busy / "notes.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert len(_files(generate_synthetic(empty, SMALL))) == 68


def test_failure_mid_generation_leaves_no_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = synthetic._write_film
    written = []

    def failing_write(job):
        if len(written) == 10:
            raise KeyboardInterrupt("killed")
        written.append(job)
        real_write(job)

    monkeypatch.setattr(synthetic, "_write_film", failing_write)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "data", SMALL)
    assert len(written) == 10
    assert list(tmp_path.iterdir()) == []  # neither the target nor the staging folder


def test_ensure_synthetic_builds_once_and_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real_fill = synthetic._fill

    def counting_fill(*args, **kwargs):
        calls.append(args)
        return real_fill(*args, **kwargs)

    monkeypatch.setattr(synthetic, "_fill", counting_fill)
    # Two jobs racing for the same cache folder: the lock makes one build and one wait.
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_synthetic(tmp_path, SMALL)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert results[0] == results[1]
    assert results[0].name == f"synthetic-{SMALL.digest()}"
    assert ensure_synthetic(tmp_path, SMALL) == results[0]
    assert len(calls) == 1

    other = ensure_synthetic(tmp_path, SyntheticSpec(**{**vars(SMALL), "n_val": 8}))
    assert other != results[0]
    assert len(calls) == 2


def test_ensure_synthetic_clears_debris_of_a_killed_run(tmp_path: Path) -> None:
    debris = tmp_path / f".synthetic-{SMALL.digest()}.partial-123-abc"
    (debris / "train").mkdir(parents=True)
    folder = ensure_synthetic(tmp_path, SMALL)
    assert not debris.exists()
    assert len(_files(folder)) == 68


def test_cli_writes_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    main(
        [
            str(out),
            "--n-train",
            "8",
            "--n-val",
            "4",
            "--n-test",
            "4",
            "--max-size",
            "64",
            "--min-size",
            "40",
            "--seed",
            "1",
        ]
    )
    assert len(_files(out)) == 16
    assert json.loads((out / synthetic.MARKER_NAME).read_text())["spec"]["max_size"] == 64
    assert "wrote 16 images" in capsys.readouterr().out


def test_cli_reports_bad_values(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "x"), "--pneumonia-fraction", "1.5"])
    assert exit_info.value.code == 2
    assert "pneumonia_fraction must be in (0, 1), got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_train", 2, "n_train must be an integer of at least 4"),
        ("max_size", 40, "max_size (40) must be >= min_size"),
        ("distractor_rate", -0.1, "distractor_rate must be in [0, 1]"),
    ],
)
def test_spec_rejects_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        SyntheticSpec(**{field: value})
