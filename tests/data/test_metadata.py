"""A film's metadata travels: a manifest's further columns and a DICOM film's header fields
(PatientID as the patient, view, age, sex) reach the records, split.csv (and back), the
predictions_<split>.csv of cxrnet-train and cxrnet-eval, and cxrnet-predict's output; a patient's
name or birth date, which the headers also hold, reaches none of them."""

from __future__ import annotations

import csv
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.console import QUICK, run_script, run_train
from helpers.dicom_films import BIRTH_DATE, PATIENT_NAME, write_dicom
from PIL import Image

from cxrnet.data.dicom_header import age_in_years, read_header
from cxrnet.data.discovery import discover_folders
from cxrnet.data.manifest import read_manifest
from cxrnet.data.records import CLASS_NAMES
from cxrnet.data.split_report import write_split_csv
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.user_errors import DataError

# Eight bytes each: no checkpoint's weights or cached pixels hold them by chance.
SECRETS = (PATIENT_NAME, BIRTH_DATE)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _dicom(path: Path, **tags: object) -> Path:
    """A small film with a name and birth date in its header, as every helper film has."""
    pixels = np.random.default_rng(len(str(path))).integers(0, 4096, (40, 40), dtype=np.uint16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (and logs) as it writes "pa" for a CS
        logging.disable(logging.WARNING)
        try:
            return write_dicom(path, pixels, bits_stored=12, **tags)
        finally:
            logging.disable(logging.NOTSET)


def _jpeg(path: Path, value: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 40), value, dtype=np.uint8)).save(path)
    return path


def _assert_nothing_identifying(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        # Text may quote a part of the name; binary files are only searched for the whole.
        for secret in (*SECRETS, "Jane") if isinstance(text, str) else SECRETS:
            assert secret.encode() not in data


def _folder_bytes(folder: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file())


# ------------------------------------------------------------------------------ DICOM header


@pytest.mark.parametrize(
    ("value", "years"),
    [
        ("045Y", "45"),
        ("100Y", "100"),
        ("006M", "0.5"),
        ("018M", "1.5"),
        ("010W", "0.19"),
        ("003D", "0.01"),
        ("45", "45"),
        (" 7y ", "7"),
        ("", None),
        ("?", None),
        ("45Z", None),
        ("-3Y", None),
    ],
)
def test_age_strings_become_years(value: str, years: str | None) -> None:
    assert age_in_years(value) == years


def test_the_header_gives_patient_view_age_and_sex_normalised(tmp_path: Path) -> None:
    film = _dicom(
        tmp_path / "a.dcm",
        PatientID=" PID-7 ",
        ViewPosition="pa",
        PatientAge="006M",
        PatientSex="f",
    )
    header = read_header(film)
    assert header.patient == "PID-7"
    assert header.fields == {"view": "PA", "age": "0.5", "sex": "F"}
    # A value outside the element's format is left out, not guessed or quoted.
    odd = _dicom(tmp_path / "b.dcm", PatientAge="?", PatientSex="unknown", PatientID="")
    assert read_header(odd).fields == {} and read_header(odd).patient is None
    (tmp_path / "c.dcm").write_text("not a DICOM file")
    assert read_header(tmp_path / "c.dcm").fields == {}


# ------------------------------------------------------------------------------ manifests


def test_further_manifest_columns_are_kept_on_the_records(tmp_path: Path) -> None:
    a, b = _jpeg(tmp_path / "a.jpeg", 10), _jpeg(tmp_path / "b.jpeg", 200)
    manifest = _write_csv(
        tmp_path / "m.csv",
        ["path", "label", " Source ", "View", "age", "probability", "source_split"],
        [
            [a, "NORMAL", "site-1", "PA", "", "0.3", "val"],
            [b, "PNEUMONIA", "site-2", "AP", "61", "", ""],
        ],
    )
    records = {r.path.name: r for r in read_manifest(manifest)["train"]}
    # Names stripped and lowercased; an empty cell is unknown, not ""; a column predictions
    # files name themselves is kept apart; split.csv's own source_split is not metadata.
    assert records["a.jpeg"].metadata == {
        "source": "site-1",
        "view": "PA",
        "input_probability": "0.3",
    }
    assert records["b.jpeg"].metadata == {"source": "site-2", "view": "AP", "age": "61"}


def test_two_columns_of_one_name_and_values_without_a_column_are_refused(tmp_path: Path) -> None:
    a = _jpeg(tmp_path / "a.jpeg", 10)
    twice = _write_csv(
        tmp_path / "twice.csv", ["path", "label", "View", "view"], [[a, 0, "PA", "AP"]]
    )
    with pytest.raises(DataError, match="two columns named 'View' and 'view'"):
        read_manifest(twice)
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text(f"path,label,\n{a},0,PA\n")
    with pytest.raises(DataError, match=r"line 2: 1 value\(s\) in no named column"):
        read_manifest(unnamed)
    beyond = tmp_path / "beyond.csv"
    beyond.write_text(f"path,label\n{a},0,PA\n")
    with pytest.raises(DataError, match=r"line 2: 1 value\(s\) in no named column"):
        read_manifest(beyond)
    # A trailing comma with nothing after it carries nothing: accepted.
    (tmp_path / "trailing.csv").write_text(f"path,label,\n{a},0,\n")
    assert read_manifest(tmp_path / "trailing.csv")["train"][0].metadata == {}


def test_split_csv_holds_the_metadata_and_reads_back_the_same(tmp_path: Path) -> None:
    rows = []
    for split in ("train", "val", "test"):
        for label in (0, 1):
            for n in range(4):
                film = _jpeg(tmp_path / split / f"{label}_{n}.jpeg", 30 * n + label)
                site = "" if n == 3 else f"site-{n % 2}"  # one film has no site
                rows.append([film, label, split, f"p{split}{label}{n}", site, "PA" if n else "AP"])
    manifest = _write_csv(
        tmp_path / "m.csv", ["path", "label", "split", "patient", "Site", "view"], rows
    )
    splits = make_splits(read_manifest(manifest), SplitConfig(split="patient", val_fraction=0.3))
    write_split_csv(tmp_path / "split.csv", splits)
    written = _rows(tmp_path / "split.csv")
    assert list(written[0]) == [
        "file",
        "split",
        "label",
        "subtype",
        "patient",
        "source_split",
        "site",
        "view",
    ]
    by_file = {row["file"]: row for row in written}
    for split, records in splits.items():
        for record in records:
            row = by_file[str(record.path.absolute())]
            assert row["split"] == split
            assert (row["site"], row["view"]) == (
                record.metadata.get("site", ""),
                record.metadata["view"],
            )
    again = read_manifest(tmp_path / "split.csv")
    for split in splits:
        before = {r.path: (r.patient, r.metadata) for r in splits[split]}
        after = {r.path: (r.patient, r.metadata) for r in again[split]}
        assert after == before


# ------------------------------------------------------------------------------ DICOM folders


def test_a_dicom_folder_gets_header_columns_and_splits_by_patient_id(tmp_path: Path) -> None:
    """UID-like names say nothing about the patient: without the header every film would be
    its own patient, and a patient split could put one patient's films on both sides."""
    patients = {}
    for label, class_name in enumerate(CLASS_NAMES):
        for n in range(24):
            pid = f"PID-{label}-{n // 3}"  # three films per patient
            path = tmp_path / "train" / class_name / f"1.2.840.{label}.{n}"
            path.parent.mkdir(parents=True, exist_ok=True)
            _dicom(
                path,
                PatientID=pid,
                ViewPosition="ap" if n % 2 else "PA",
                PatientAge=f"{20 + n:03d}Y",
                PatientSex="M" if n % 3 else "F",
            )
            patients[path] = pid
    records = discover_folders(tmp_path).records["train"]
    assert {r.path: r.patient for r in records} == patients
    n_of = {r.path: int(r.path.name.rsplit(".", 1)[1]) for r in records}
    for record in records:
        n = n_of[record.path]
        assert record.metadata == {
            "view": "AP" if n % 2 else "PA",
            "age": str(20 + n),
            "sex": "M" if n % 3 else "F",
        }
    for seed in range(3):
        splits = make_splits({"train": records}, SplitConfig("patient", 0.3, split_seed=seed))
        sides = {split: {r.patient for r in items} for split, items in splits.items()}
        assert sides["train"] and sides["val"] and not sides["train"] & sides["val"]
    write_split_csv(tmp_path / "split.csv", splits)
    written = _rows(tmp_path / "split.csv")
    assert {row["patient"] for row in written} == set(patients.values())
    assert list(written[0])[-3:] == ["age", "sex", "view"]
    _assert_nothing_identifying((tmp_path / "split.csv").read_bytes())


def test_a_manifest_wins_over_the_header_and_the_header_fills_its_blanks(tmp_path: Path) -> None:
    given = _dicom(tmp_path / "given.dcm", PatientID="PID-1", ViewPosition="PA", PatientAge="045Y")
    blank = _dicom(tmp_path / "blank.dcm", PatientID="PID-2", ViewPosition="PA", PatientSex="F")
    manifest = _write_csv(
        tmp_path / "m.csv",
        ["path", "label", "patient_id", "view", "age"],
        [[given, "NORMAL", "manifest-patient", "AP", "50"], [blank, "PNEUMONIA", "", "", ""]],
    )
    records = {r.path.name: r for r in read_manifest(manifest)["train"]}
    assert records["given.dcm"].patient == "manifest-patient"
    assert records["given.dcm"].metadata == {"view": "AP", "age": "50"}
    assert records["blank.dcm"].patient == "PID-2"
    assert records["blank.dcm"].metadata == {"view": "PA", "sex": "F"}


# ---------------------------------------------------------------------- through the commands


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """The synthetic films listed in a manifest with further columns, every third one as a
    DICOM film (with a name and birth date in its header) whose row leaves view and age blank
    for the header to fill; then one cxrnet-train run on it."""
    root = tmp_path_factory.mktemp("metadata")
    dicom_dir = root / "dicom"
    dicom_dir.mkdir()
    rows, expected = [], {}
    films = sorted(synthetic_root.rglob("*.jpeg"))
    for number, film in enumerate(films):
        split, class_name = film.parent.parent.name, film.parent.name
        if number % 3:
            path, source, view, age = film, "kaggle", "PA", str(number % 60)
            wanted = {"source": source, "view": view, "age": age}
        else:
            pixels = np.asarray(Image.open(film).convert("L"), dtype=np.uint8)
            path = dicom_dir / f"{number}.dcm"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                write_dicom(
                    path,
                    pixels,
                    PatientID=f"PID-{number // 6}",
                    ViewPosition="ap",
                    PatientAge="070Y",
                    PatientSex="M",
                )
            # One DICOM row names its view: the manifest's value wins over the header's.
            source, view, age = "hospital", "LL" if number == 0 else "", ""
            wanted = {"source": source, "view": view or "AP", "age": "70", "sex": "M"}
        rows.append([path, class_name, split, source, view, age])
        expected[str(path)] = wanted
    manifest = _write_csv(
        root / "site.csv", ["path", "label", "split", "Source", "View", "age"], rows
    )
    done = run_train(
        [*QUICK, f"data.root={manifest}", "trainer.max_epochs=1", f"paths.log_dir={root / 'logs'}"],
        root,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics,) = (root / "logs").glob("*/runs/*/metrics.json")
    record = json.loads(metrics.read_text())
    return {
        "root": root,
        "manifest": manifest,
        "dicom_dir": dicom_dir,
        "expected": expected,
        "run_dir": metrics.parent,
        "ckpt": Path(record["paths"]["best_checkpoint"]),
        "output": done.stdout + done.stderr,
    }


def _check_columns(rows: list[dict[str, str]], expected: dict[str, dict[str, str]]) -> None:
    assert rows
    for row in rows:
        wanted = expected[row["file"]]
        assert {name: row[name] for name in ("source", "view", "age", "sex")} == {
            "sex": "",
            **wanted,
        }
        if row["file"].endswith(".dcm"):
            number = int(Path(row["file"]).stem)
            assert row["patient"] == f"PID-{number // 6}"


def test_training_writes_the_metadata_to_split_csv_and_the_predictions(site: dict) -> None:
    run_dir = site["run_dir"]
    split_rows = _rows(run_dir / "split.csv")
    assert len(split_rows) == len(site["expected"])
    assert list(split_rows[0])[6:] == ["age", "sex", "source", "view"]
    _check_columns(split_rows, site["expected"])
    test_rows = _rows(run_dir / "predictions_test.csv")
    assert list(test_rows[0])[:6] == [
        "file",
        "label",
        "subtype",
        "patient",
        "probability",
        "prediction",
    ]
    assert {row["file"] for row in test_rows} == {
        r["file"] for r in split_rows if r["split"] == "test"
    }
    _check_columns(test_rows, site["expected"])
    _check_columns(_rows(run_dir / "predictions_val.csv"), site["expected"])
    # split.csv is a manifest: read back, the films keep their splits, patients and metadata.
    again = read_manifest(run_dir / "split.csv")
    for row in split_rows:
        (record,) = [r for r in again[row["split"]] if str(r.path) == row["file"]]
        assert record.patient == row["patient"]
        assert record.metadata == {k: row[k] for k in ("age", "sex", "source", "view") if row[k]}


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_cxrnet_eval_writes_the_metadata_to_its_predictions(site: dict) -> None:
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={site['ckpt']}", f"paths.log_dir={site['root'] / 'eval_logs'}"],
        site["root"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (predictions,) = (site["root"] / "eval_logs").rglob("predictions_test.csv")
    _check_columns(_rows(predictions), site["expected"])
    _assert_nothing_identifying(done.stdout, done.stderr, _folder_bytes(site["root"] / "eval_logs"))


def test_predict_from_a_manifest_keeps_its_columns_and_adds_the_header(site: dict) -> None:
    output = site["root"] / "predicted.csv"
    done = run_script(
        "cxrnet-predict",
        [
            f"ckpt_path={site['ckpt']}",
            f"input={site['manifest']}",
            f"output={output}",
            "progress=false",
        ],
        site["root"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(output)
    assert list(rows[0]) == [
        "path",
        "probability",
        "prediction",
        "threshold",
        "error",
        "seen",
        "label",
        "split",
        "Source",
        "View",
        "age",
        "patient",
        "sex",
    ]
    manifest_rows = _rows(site["manifest"])
    assert [row["path"] for row in rows] == [row["path"] for row in manifest_rows]
    for row, listed in zip(rows, manifest_rows, strict=True):
        wanted = site["expected"][row["path"]]
        assert row["error"] == "" and row["probability"]
        assert (row["label"], row["split"], row["Source"]) == (
            listed["label"],
            listed["split"],
            listed["Source"],
        )
        assert (row["View"], row["age"], row["sex"]) == (
            wanted["view"],
            wanted["age"],
            wanted.get("sex", ""),
        )
        dicom = row["path"].endswith(".dcm")
        assert row["patient"] == (f"PID-{int(Path(row['path']).stem) // 6}" if dicom else "")
    _assert_nothing_identifying(done.stdout, done.stderr, output.read_bytes())


def test_predict_on_a_dicom_folder_gives_the_header_columns(site: dict) -> None:
    output = site["root"] / "folder.csv"
    done = run_script(
        "cxrnet-predict",
        [
            f"ckpt_path={site['ckpt']}",
            f"input={site['dicom_dir']}",
            f"output={output}",
            "progress=false",
        ],
        site["root"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _rows(output)
    assert list(rows[0])[6:] == ["patient", "view", "age", "sex"]
    assert len(rows) == len(list(site["dicom_dir"].glob("*.dcm")))
    for row in rows:
        number = int(Path(row["path"]).stem)
        assert (row["patient"], row["view"], row["age"], row["sex"]) == (
            f"PID-{number // 6}",
            "AP",
            "70",
            "M",
        )
    _assert_nothing_identifying(done.stdout, done.stderr, output.read_bytes())


def test_no_name_or_birth_date_reaches_the_run_folder_logs_or_output(site: dict) -> None:
    assert any(path.suffix == ".dcm" for path in map(Path, site["expected"]))
    _assert_nothing_identifying(site["output"], _folder_bytes(site["root"] / "logs"))
    # The cache the run decoded into (script_env puts it beside the run) holds none either.
    _assert_nothing_identifying(_folder_bytes(site["root"] / "cache"))
    # ... while the films themselves do: the check would see them.
    assert PATIENT_NAME.encode() in next(site["dicom_dir"].glob("*.dcm")).read_bytes()


def test_the_fold_ensembles_predictions_keep_the_metadata() -> None:
    """cxrnet-ensemble's predictions_oof.csv and predictions_test.csv: the folds' pooled
    validation films, and the members' mean on the held-out films, keep their columns."""
    from cxrnet.evaluation.report import SplitPredictions
    from cxrnet.passes.fold_ensemble import mean_over_members, pooled_out_of_fold

    def part(files: tuple[str, ...], p: float, **columns: tuple[str, ...]) -> SplitPredictions:
        n = len(files)
        return SplitPredictions(
            np.full(n, p), np.zeros(n, dtype=np.int64), files, ("normal",) * n, files, columns
        )

    pooled = pooled_out_of_fold(
        [part(("a", "b"), 0.1, view=("PA", "AP")), part(("c",), 0.2, view=("LL",), site=("x",))]
    )
    assert pooled.columns == {"site": ("", "", "x"), "view": ("PA", "AP", "LL")}
    mean = mean_over_members(
        [part(("b", "a"), 0.2, view=("AP", "PA")), part(("a", "b"), 0.4, view=("PA", "AP"))],
        ["fold 0", "fold 1"],
    )
    assert mean.files == ("a", "b") and mean.columns == {"view": ("PA", "AP")}


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_cxrnet_eval_reports_subgroups_of_the_manifests_columns(site: dict) -> None:
    """The subgroup tables from a real manifest's columns and DICOM header fields, through the
    console script: each column's categories in metrics.json (with intervals) and report.md."""
    logs = site["root"] / "subgroup_logs"
    done = run_script(
        "cxrnet-eval",
        [
            f"ckpt_path={site['ckpt']}",
            f"paths.log_dir={logs}",
            "report.subgroups=[source,view,age_band]",
            "report.resamples=50",
        ],
        site["root"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (metrics_file,) = logs.rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())["metrics"]
    tested = _rows(metrics_file.parent / "predictions_test.csv")
    for source in {row["source"] for row in tested}:
        films = sum(row["source"] == source for row in tested)
        assert metrics[f"test/subgroup/source={source}/n"] == films
        low = metrics[f"test/subgroup/source={source}/prevalence_ci_low"]
        high = metrics[f"test/subgroup/source={source}/prevalence_ci_high"]
        assert low <= metrics[f"test/subgroup/source={source}/prevalence"] <= high
    # The header's age of 70 puts every DICOM film in the 65+ band.
    hospital = sum(row["source"] == "hospital" for row in tested)
    assert metrics["test/subgroup/age_band=65+/n"] >= hospital
    assert "test/shortcut/source/auroc" in metrics
    report = (metrics_file.parent / "report.md").read_text()
    for column in ("source", "view", "age_band"):
        assert f"### test: by {column}" in report
