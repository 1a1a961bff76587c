"""A public dataset's bad label files and missing films, through ``cxrnet-train`` as a user meets
them: one ``error:`` line naming the dataset, the file and the column or line, exit 2, and
nothing cached (the labels are read before any film is decoded); with
``data.on_bad_image=skip`` every missing film is listed in ignored.csv instead."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from helpers.console import run_train
from helpers.public_data import NIH_LABELS, lay_films, read_shipped, write_csv

LABELS = NIH_LABELS.removesuffix(".gz")


def _nih(root: Path) -> list[list[str]]:
    """NIH's first 300 rows and 60 more with pneumonia as a download (every film flat in
    images/); the header and rows as written."""
    header, rows = read_shipped(NIH_LABELS)
    rows = rows[:300] + [row for row in rows[300:] if "Pneumonia" in row[1]][:60]
    write_csv(root / LABELS, header, rows)
    lay_films(root / "images" / row[0] for row in rows)
    return [header, *rows]


def _drop_column(root: Path, rows: list[list[str]]) -> str:
    at = rows[0].index("Patient ID")
    write_csv(
        root / LABELS, rows[0][:at] + rows[0][at + 1 :], [r[:at] + r[at + 1 :] for r in rows[1:]]
    )
    return f"NIH ChestX-ray14: {root / LABELS} has no column 'Patient ID'"


def _unknown_label(root: Path, rows: list[list[str]]) -> str:
    rows[5][1] = "Pneumonitis"
    write_csv(root / LABELS, rows[0], rows[1:])
    return f"NIH ChestX-ray14: {root / LABELS} line 6, column 'Finding Labels': 'Pneumonitis'"


def _missing_film(root: Path, rows: list[list[str]]) -> str:
    normal = next(row for row in rows[1:] if row[1] == "No Finding")
    (root / "images" / normal[0]).unlink()
    return "NIH ChestX-ray14: 1 film(s) its label files list are not under"


def _truncated(root: Path, rows: list[list[str]]) -> str:
    text = (root / LABELS).read_text()
    (root / LABELS).write_text(text[: len(text) // 2 - 7])
    return "the file looks truncated or damaged: download it again"


CASES = {
    "a film listed but absent": _missing_film,
    # A console run each (about 10 s): the default tier keeps one, the slow tier the rest.
    "a label file missing a column": pytest.param(_drop_column, marks=pytest.mark.slow),
    "an unknown label value": pytest.param(_unknown_label, marks=pytest.mark.slow),
    "a truncated label file": pytest.param(_truncated, marks=pytest.mark.slow),
}


def _source(root: Path) -> str:
    return f"data.sources={{nih: {{format: nih, root: {root}}}}}"


@pytest.mark.parametrize("damage", list(CASES.values()), ids=list(CASES))
def test_a_bad_public_download_is_one_error_line_and_exit_2(tmp_path: Path, damage) -> None:
    root = tmp_path / "nih"
    expected = damage(root, _nih(root))
    done = run_train(["debug=fast", _source(root), "data.split=patient"], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert expected in line
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


@pytest.mark.slow  # a whole (tiny) training run
def test_missing_films_skipped_are_each_listed_in_ignored_csv(tmp_path: Path) -> None:
    root = tmp_path / "nih"
    rows = _nih(root)
    gone = [root / "images" / row[0] for row in rows[1:] if "No Finding" in row[1]][:3]
    for path in gone:
        path.unlink()
    args = ["debug=fast", _source(root), "data.split=patient", "data.on_bad_image=skip"]
    done = run_train([*args, f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    with (tmp_path / "run" / "ignored.csv").open(newline="") as handle:
        ignored = {row["file"]: row["reason"] for row in csv.DictReader(handle)}
    for path in gone:
        assert ignored[str(path)].startswith("listed in the dataset's label files but not on disk")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "data.sources={site: <tmp>/site/labels.csv}",
            "data.sources.site=<tmp>/site/labels.csv: no such manifest",
        ),
        (
            "data.sources={peds: <tmp>/chest_xray}",
            "data.sources.peds=<tmp>/chest_xray: no such folder",
        ),
        ("data.root=<tmp>/chest_xray", "data.root=<tmp>/chest_xray: no such folder"),
    ],
    ids=["named-manifest", "named-folder", "root"],
)
def test_a_missing_source_is_named_by_the_setting_that_gave_it(
    tmp_path: Path, source: str, expected: str
) -> None:
    done = run_train(["debug=fast", source.replace("<tmp>", str(tmp_path))], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line.startswith(f"error: {expected.replace('<tmp>', str(tmp_path))}; point ")
    assert "docs/datasets.md" in line
