"""data.other_classes: training data whose manifest lists films of another class (OTHER_ABNORMAL)
stops the run naming the line (error, the default) or lists each film in ignored.csv (ignore)."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_train
from helpers.datamodule import make_dm

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from cxrnet.user_errors import DataError


def site_manifest(tmp_path: Path, n_other: int = 3) -> tuple[Path, list[Path]]:
    """A manifest of a synthetic set's train+val films (no split column) and three films of
    another class, as a site's export would list them."""
    root = generate_synthetic(
        tmp_path / "data", SyntheticSpec(n_train=48, n_val=8, n_test=4, min_size=40, max_size=56)
    )
    films = sorted((root / "train").rglob("*.jpeg")) + sorted((root / "val").rglob("*.jpeg"))
    # Every third picture, relabelled as another finding: both classes keep most of their films.
    others = films[::3][:n_other]
    manifest = tmp_path / "site.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "view"])
        for film in (film for film in films if film not in others):
            writer.writerow([film, film.parent.name, "PA"])
        for film in others:
            writer.writerow([film, "OTHER_ABNORMAL", "AP"])
    return manifest, others


def test_the_default_stops_naming_the_line_and_the_setting(tmp_path: Path) -> None:
    manifest, _ = site_manifest(tmp_path)
    with pytest.raises(DataError, match=r"line \d+: label 'OTHER_ABNORMAL'.*other_classes=ignore"):
        make_dm(manifest, split="patient").setup("fit")


def test_ignore_lists_every_such_film_and_never_trains_or_validates_on_it(tmp_path: Path) -> None:
    manifest, others = site_manifest(tmp_path)
    dm = make_dm(manifest, split="patient", other_classes="ignore")
    dm.setup("fit")
    assert sorted(path for path, _ in dm.ignored) == sorted(others)
    assert all("OTHER_ABNORMAL" in reason for _, reason in dm.ignored)
    used = {record.path for records in dm.split_records.values() for record in records}
    assert not used & set(others)
    assert dm.others == []  # not a test set: nothing is scored as its own group


def test_the_log_counts_the_ignored_films_in_one_line_naming_ignored_csv(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, others = site_manifest(tmp_path, n_other=14)
    dm = make_dm(manifest, split="patient", other_classes="ignore", report_dir=tmp_path / "run")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ignored")]
    assert line == (
        "ignored 14 file(s) (14 class OTHER_ABNORMAL: neither NORMAL nor PNEUMONIA): every one "
        f"listed in {tmp_path / 'run' / 'ignored.csv'}"
    )
    with (tmp_path / "run" / "ignored.csv").open(newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(others) == 14


def test_without_a_report_folder_the_log_still_names_ten_and_counts_the_rest_per_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest, _ = site_manifest(tmp_path, n_other=14)
    dm = make_dm(manifest, split="patient", other_classes="ignore")
    with caplog.at_level(logging.WARNING):
        dm.setup("fit")
    assert caplog.text.count("ignored /") == 10
    assert "ignored 4 more file(s) (4 class OTHER_ABNORMAL" in caplog.text
    assert "a data module with a report_dir lists every one in ignored.csv" in caplog.text


def test_a_bad_value_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    manifest, _ = site_manifest(tmp_path)
    with pytest.raises(DataError, match=r"data.other_classes='skip': choose error .* or ignore"):
        make_dm(manifest, other_classes="skip")


@pytest.mark.slow
def test_cxrnet_train_with_ignore_writes_the_films_to_ignored_csv(tmp_path: Path) -> None:
    manifest, others = site_manifest(tmp_path)
    done = run_train(
        [
            *QUICK,
            f"data.root={manifest}",
            "data.split=patient",
            "data.other_classes=ignore",
            "data.image_size=32",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (run_folder(done.stdout) / "ignored.csv").open(newline="") as handle:
        listed = {Path(row["file"]) for row in csv.DictReader(handle)}
    assert listed == set(others)
