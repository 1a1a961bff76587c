"""CSV manifests: reading, every error a user can make, combining sources, reading splits back."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image

from cxrnet.data.manifest import load_records, read_manifest
from cxrnet.data.records import make_record
from cxrnet.data.sources import combine_records
from cxrnet.data.split_report import write_split_csv
from cxrnet.data.splits import SplitConfig, make_splits
from cxrnet.user_errors import DataError


def image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", (8, 8), color=len(path.name) * 7 % 256).save(path, format="JPEG")
    return path


def manifest(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A foreign data set: names that say nothing about the patient or the kind."""
    for name in ("a.jpeg", "b.jpg", "c.png", "d.jpeg", "e.jpeg", "f.JPG"):
        image(tmp_path / "site" / "img" / name)
    return tmp_path / "site"


def test_reads_paths_labels_patients_splits_and_subtypes(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    csv_path = manifest(
        site / "labels.csv",
        "Path,Label,Patient_ID,Split,Subtype\n"
        "img/a.jpeg,NORMAL,p1,train,\n"
        "img/b.jpg,pneumonia,p2,,virus\n"
        "img/c.png,1,p2,val,\n"
        "img/d.jpeg,0,,TEST,\n"
        f"{site / 'img' / 'e.jpeg'},Pneumonia,p3,train,bacteria\n",
    )
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the CSV, not the cwd
    records = read_manifest(csv_path)
    assert list(records) == ["train", "val", "test"]
    by_name = {r.path.name: r for items in records.values() for r in items}
    assert by_name["a.jpeg"].path == site / "img" / "a.jpeg"
    assert by_name["a.jpeg"].label == 0
    assert by_name["a.jpeg"].subtype == "normal"
    assert by_name["b.jpg"].source_split == "train"  # empty split means train
    assert by_name["b.jpg"].subtype == "virus"
    assert by_name["c.png"].subtype == "unknown"  # pneumonia, no kind in name or column
    assert by_name["b.jpg"].patient == by_name["c.png"].patient == "p2"
    assert by_name["d.jpeg"].patient == "d"  # no patient_id: from the file name
    assert by_name["e.jpeg"].subtype == "bacteria"


def test_manifest_without_split_column_is_all_train_and_can_be_re_split(site: Path) -> None:
    rows = [
        f"img/{n},{'NORMAL' if i % 2 else 'PNEUMONIA'}"
        for i, n in enumerate(sorted(p.name for p in (site / "img").iterdir()))
    ]
    csv_path = manifest(site / "m.csv", "path,label\n" + "\n".join(rows) + "\n")
    records = read_manifest(csv_path)
    assert list(records) == ["train"]
    splits = make_splits(records, SplitConfig("stratified", val_fraction=0.5))
    assert {r.label for r in splits["val"]} == {0, 1}
    with pytest.raises(DataError, match="needs a val folder"):
        make_splits(records, SplitConfig("official"))


def test_missing_file_names_the_line_and_the_path(site: Path) -> None:
    csv_path = manifest(site / "m.csv", "path,label\nimg/a.jpeg,0\nimg/nope.jpeg,1\n")
    with pytest.raises(DataError) as error:
        read_manifest(csv_path)
    message = str(error.value)
    assert str(csv_path) in message
    assert f"line 3: file {site / 'img' / 'nope.jpeg'} not found" in message


def test_bad_label_names_the_line_and_the_allowed_values(site: Path) -> None:
    csv_path = manifest(site / "m.csv", "path,label\nimg/a.jpeg,0\nimg/b.jpg,sick\n")
    with pytest.raises(
        DataError, match=r"line 3: label 'sick' is not one of NORMAL, PNEUMONIA, 0, 1"
    ):
        read_manifest(csv_path)


def test_every_bad_row_is_reported_at_once(site: Path) -> None:
    csv_path = manifest(
        site / "m.csv",
        "path,label,split,subtype\n"
        "img/a.jpeg,2,train,\n"
        "img/b.jpg,1,holdout,\n"
        "img/c.png,0,train,virus\n"
        "notes.txt,0,train,\n"
        ",1,train,\n",
    )
    (site / "notes.txt").write_text("not a picture")
    with pytest.raises(DataError, match="5 problem") as error:
        read_manifest(csv_path)
    message = str(error.value)
    assert "line 2: label '2'" in message
    assert "line 3: split 'holdout' is not one of train, val, test" in message
    assert "line 4: subtype 'virus' contradicts label NORMAL" in message
    assert "line 5:" in message and "is not an image" in message
    assert "line 6: empty path" in message


def test_missing_columns_name_the_csv(site: Path) -> None:
    csv_path = manifest(site / "m.csv", "filename,diagnosis\nimg/a.jpeg,0\n")
    with pytest.raises(DataError, match="lacks column") as error:
        read_manifest(csv_path)
    assert str(csv_path) in str(error.value)
    assert "path, label" in str(error.value)


def test_empty_csv_and_missing_csv_are_errors(site: Path) -> None:
    with pytest.raises(DataError, match="lacks column"):
        read_manifest(manifest(site / "empty.csv", ""))
    with pytest.raises(DataError, match="lists no images"):
        read_manifest(manifest(site / "header.csv", "path,label\n"))
    with pytest.raises(DataError, match="not found"):
        read_manifest(site / "absent.csv")


def test_same_file_twice_names_both_lines(site: Path) -> None:
    csv_path = manifest(site / "m.csv", "path,label\nimg/a.jpeg,0\nimg/b.jpg,1\nimg/a.jpeg,0\n")
    with pytest.raises(DataError, match=r"line 4: .*already listed on line 2"):
        read_manifest(csv_path)


def test_spreadsheet_byte_order_mark_and_blank_lines_are_accepted(site: Path) -> None:
    csv_path = site / "m.csv"
    csv_path.write_text("\ufeffpath,label\nimg/a.jpeg,0\n\nimg/b.jpg,1\n", encoding="utf-8")
    assert len(read_manifest(csv_path)["train"]) == 2


def test_two_manifests_combine_and_overlaps_are_refused(tmp_path: Path) -> None:
    image(tmp_path / "one" / "IM-0001-0001.jpeg")
    image(tmp_path / "two" / "x" / "person5_virus_1.png")
    first = manifest(
        tmp_path / "one" / "m.csv", "path,label,split\nIM-0001-0001.jpeg,NORMAL,train\n"
    )
    second = manifest(tmp_path / "two" / "m.csv", "path,label,split\nx/person5_virus_1.png,1,val\n")
    combined = combine_records(read_manifest(first), read_manifest(second))
    assert {k: [r.path.name for r in v] for k, v in combined.items()} == {
        "train": ["IM-0001-0001.jpeg"],
        "val": ["person5_virus_1.png"],
    }
    assert load_records([first, second]) == combined
    with pytest.raises(DataError, match="more than one of the combined sources"):
        combine_records(read_manifest(first), read_manifest(first))


def test_folder_and_manifest_combine(tmp_path: Path) -> None:
    for folder, name in (("NORMAL", "IM-0001-0001.jpeg"), ("PNEUMONIA", "person1_virus_1.jpeg")):
        image(tmp_path / "kermany" / "train" / folder / name)
    image(tmp_path / "extra" / "scan.png")
    extra = manifest(tmp_path / "extra" / "m.csv", "path,label\nscan.png,PNEUMONIA\n")
    records = load_records([tmp_path / "kermany", extra])
    assert sorted(r.path.name for r in records["train"]) == [
        "IM-0001-0001.jpeg",
        "person1_virus_1.jpeg",
        "scan.png",
    ]


def test_written_split_reads_back_as_the_same_split(tmp_path: Path) -> None:
    names = [f"IM-{i:04d}-0001.jpeg" for i in range(12)] + [
        f"person{i}_virus_1.jpeg" for i in range(12)
    ]
    records = {
        "train": [
            make_record(image(tmp_path / "img" / n), int(n.startswith("p")), "train") for n in names
        ]
    }
    splits = make_splits(records, SplitConfig("patient", val_fraction=0.25, split_seed=5))
    target = tmp_path / "run" / "splits.csv"
    write_split_csv(target, splits)
    # Pinning: the CSV written for one run reproduces its split in a later run.
    pinned = make_splits(read_manifest(target), SplitConfig("official"))
    for split in ("train", "val"):
        assert [(r.path, r.label, r.subtype, r.patient) for r in pinned[split]] == [
            (r.path, r.label, r.subtype, r.patient) for r in splits[split]
        ]


def test_combining_names_each_clash_and_keeps_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fast path (one set per part and split) must still name every clash, relative and
    # absolute spellings of one file included, and keep each file once.
    for name in ("IM-0001-0001.jpeg", "IM-0002-0001.jpeg"):
        image(tmp_path / "one" / name)
    first = manifest(
        tmp_path / "one" / "m.csv",
        "path,label,split\nIM-0001-0001.jpeg,NORMAL,train\nIM-0002-0001.jpeg,NORMAL,train\n",
    )
    records = read_manifest(first)["train"]
    monkeypatch.chdir(tmp_path)
    again = [replace(records[1], path=records[1].path.relative_to(tmp_path))]
    with pytest.raises(
        DataError, match=r"^1 file\(s\).*\n  .*IM-0002-0001.jpeg \(in train and val\)"
    ):
        combine_records({"train": records}, {"val": again})
    assert combine_records({"train": records[:1]}, {"val": records[1:]}) == {
        "train": records[:1],
        "val": records[1:],
    }
