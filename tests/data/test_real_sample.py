"""A sample of 32 real films: parsing, decoding, duplicates and a real training step.

The sample is copied from ../shared/data (tests/helpers/real_films.py says which files and why);
where that folder is absent these tests skip, saying so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.decode import DecodeParams, decode, fit_to_square, read_gray
from cxrnet.data.discovery import discover_folders
from cxrnet.data.duplicates import check_duplicates
from cxrnet.data.records import check_subtypes, subtype_counts
from cxrnet.runs import RunStatus, read_record
from cxrnet.training.run import run

pytestmark = pytest.mark.real_data

RGB_ORIGINAL = "train/PNEUMONIA/person1177_virus_1999.jpeg"
FULL_RESOLUTION = (
    "train/NORMAL/NORMAL2-IM-0468-0001.jpeg",
    "train/PNEUMONIA/person1139_virus_1882.jpeg",
)


def _files(root: Path) -> list[Path]:
    return sorted(path for path in root.rglob("*.jpeg"))


def _full_decode_reference(path: Path, params: DecodeParams) -> np.ndarray:
    """PIL's full-size grayscale conversion, then the project's own resize."""
    with Image.open(path) as image:
        gray = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    return fit_to_square(gray, params)


def test_every_file_is_found_with_its_class_subtype_and_patient(real_sample: Path) -> None:
    result = discover_folders(real_sample)
    assert result.ignored == []
    train, val = result.records["train"], result.records["val"]
    assert sorted(result.records) == ["train", "val"]
    assert [sum(r.label == i for r in train) for i in (0, 1)] == [12, 12]
    assert [sum(r.label == i for r in val) for i in (0, 1)] == [4, 4]
    assert subtype_counts(train) == {"normal": 12, "bacteria": 4, "virus": 8}
    check_subtypes(train + val)
    patient = {r.path.name: r.patient for r in train + val}
    assert patient["IM-0115-0001.jpeg"] == "im-0115"
    assert patient["NORMAL2-IM-0587-0001-0002.jpeg"] == "normal2-im-0587"
    # The person number runs separately per kind: 1139 bacterial and 1139 viral differ.
    assert patient["person1139_bacteria_3081.jpeg"] == "person1139_bacteria"
    assert patient["person1139_virus_1882.jpeg"] == "person1139_virus"
    assert patient["person1177_virus_1999.jpeg"] == patient["person1177_virus_2000.jpeg"]
    # Every name follows a known pattern: no patient key fell back to the file stem.
    assert not [r for r in train + val if r.patient == r.path.stem.lower()]
    assert len({r.patient for r in train}) == 21


def test_the_sample_holds_the_kinds_of_file_it_is_meant_to(real_sample: Path) -> None:
    with Image.open(real_sample / RGB_ORIGINAL) as image:
        assert image.mode == "RGB"
    for name in FULL_RESOLUTION:
        with Image.open(real_sample / name) as image:
            assert image.mode == "L" and min(image.size) >= 800
    assert sum(path.stat().st_size for path in _files(real_sample)) < 2_000_000


@pytest.mark.parametrize(
    "params",
    [DecodeParams(150), DecodeParams(224), DecodeParams(150, resize="letterbox")],
    ids=["150-squash", "224-squash", "150-letterbox"],
)
def test_every_file_decodes_within_one_grey_level_of_a_full_decode(
    real_sample: Path, params: DecodeParams
) -> None:
    files = _files(real_sample)
    assert len(files) == 32
    for path in files:
        image = decode(path, params)
        assert image.shape == (params.image_size, params.image_size)
        assert image.dtype == np.uint8
        assert image.std() > 10, f"{path.name} decoded to a flat picture"
        reference = _full_decode_reference(path, params)
        difference = np.abs(image.astype(np.int16) - reference.astype(np.int16)).mean()
        assert difference <= 1.0, (path.name, difference)


def test_full_resolution_films_are_decoded_reduced(real_sample: Path) -> None:
    for name in FULL_RESOLUTION:
        path = real_sample / name
        with Image.open(path) as image:
            width, height = image.size
        rows, cols = read_gray(path, target=150).shape
        assert rows <= -(-height // 2) and cols <= -(-width // 2)  # at most half each way


def test_both_byte_identical_pairs_are_found_within_one_patient(real_sample: Path) -> None:
    report = check_duplicates(discover_folders(real_sample).records)
    assert report.across == []
    pairs = sorted(sorted(r.path.name for r in group) for group in report.within["train"])
    assert pairs == [
        ["NORMAL2-IM-0587-0001-0001.jpeg", "NORMAL2-IM-0587-0001-0002.jpeg"],
        ["person1261_virus_2147.jpeg", "person1261_virus_2148.jpeg"],
    ]
    assert all(len({r.patient for r in group}) == 1 for group in report.within["train"])


def test_subtype_batches_from_real_films(real_sample: Path, tmp_path: Path) -> None:
    dm = ChestXRayDataModule(
        root=real_sample,
        image_size=64,
        batch_size=8,
        num_workers=0,
        task="subtype",
        cache_dir=tmp_path / "cache",
    )
    dm.setup("fit")
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 64, 64)
    assert 0.0 <= float(images.min()) < float(images.max()) <= 1.0
    assert sorted(set(dm.datasets["train"].labels.tolist())) == [0, 1, 2]


def test_seed_recipe_trains_an_epoch_on_the_sample(compose_cfg, real_sample: Path) -> None:
    before = [(path, path.stat().st_mtime_ns) for path in _files(real_sample)]
    cfg = compose_cfg(
        "train",
        [
            "experiment=notebook_baseline",
            f"data.root={real_sample}",
            "data.image_size=64",
            "data.batch_size=8",
            "trainer.max_epochs=1",
            "data.num_workers=0",
            "data.decode_workers=0",
        ],
    )
    record = read_record(run(cfg).run_dir)  # what the run wrote, read back as tools do
    assert record is not None and record.status is RunStatus.COMPLETED
    assert np.isfinite(record.metrics["val/loss"])
    assert 0.0 <= record.metrics["val/auroc"] <= 1.0
    assert Path(record.paths["best_checkpoint"]).is_file()
    run_dir = Path(record.run_dir)
    counts = (run_dir / "counts.csv").read_text().splitlines()
    assert counts[1].startswith("train,24,")
    assert counts[2].startswith("val,8,")
    assert "NORMAL2-IM-0587-0001-0002" in (run_dir / "duplicates.csv").read_text()
    # The sample is an input: the run wrote nothing into it.
    assert [(path, path.stat().st_mtime_ns) for path in _files(real_sample)] == before
