"""The pointing game (issue 18 item 4): the Grad-CAM peak of each PNEUMONIA film with opacity
boxes, mapped back to the original film's pixels, inside a box or not; against the chance rate
(the fraction of each film the boxes cover). Synthetic films of known sizes and a heatmap stub
whose peak is known, so every number is worked out by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.pointing import (
    covered_fraction,
    film_size,
    parse_boxes,
    play,
    score_by_group,
    score_films,
    to_original,
)
from cxrnet.evaluation.report import ReportSettings
from cxrnet.models.module import ClassifierModule
from cxrnet.passes import site_pass
from cxrnet.user_errors import DataError

SQUASH = DecodeParams(32, "squash")
LETTERBOX = DecodeParams(32, "letterbox")


def test_boxes_parse_and_a_malformed_one_names_the_film() -> None:
    assert parse_boxes("10 20 30 40;50.5 60 5 5") == [(10, 20, 30, 40), (50.5, 60, 5, 5)]
    assert parse_boxes("") == [] and parse_boxes(" ; ") == []
    for bad in ("10 20 30", "a b c d", "1 2 0 4"):
        with pytest.raises(DataError, match=r"film\.png: box .* is not 'x y w h'"):
            parse_boxes(bad, "film.png")


def test_the_chance_rate_is_the_area_the_union_of_boxes_covers() -> None:
    size = (100, 50)  # 5000 pixels
    # Two 20x10 boxes overlapping on 10x5: a union of 350.
    assert covered_fraction([(0, 0, 20, 10), (10, 5, 20, 10)], size) == pytest.approx(350 / 5000)
    # A box running off the film counts only what is on it: 10x10.
    assert covered_fraction([(90, 40, 20, 20)], size) == pytest.approx(100 / 5000)
    assert covered_fraction([(0, 0, 100, 50), (10, 10, 5, 5)], size) == 1.0


def test_a_peak_maps_back_through_squash_and_letterbox() -> None:
    # A 200x100 film squashed to 32x32: each input pixel is 6.25 wide and 3.125 high.
    assert to_original(8, 16, (200, 100), SQUASH) == (16.5 * 6.25, 8.5 * 3.125)
    # Letterboxed: scaled by 32/200 to 32x16, with 8 black rows above.
    assert to_original(16, 16, (200, 100), LETTERBOX) == (16.5 * 6.25, 8.5 * 6.25)


def _film(folder: Path, name: str, width: int, height: int) -> Path:
    path = folder / name
    Image.fromarray(np.full((height, width), 128, np.uint8)).save(path)
    return path


def _stub(peaks: list[tuple[int, int]]):
    """Heatmaps that peak at ``peaks[i]`` (row, col of the 32 px input) for the i-th film."""
    calls = iter(peaks)

    def heatmaps(images: torch.Tensor) -> np.ndarray:
        maps = np.zeros((len(images), 32, 32))
        for heatmap in maps:
            row, col = next(calls)
            heatmap[row, col] = 1.0
            heatmap[max(0, row - 1), col] = 0.5  # a lesser bump nearby changes nothing
        return maps

    return heatmaps


def test_hits_and_chance_on_films_with_known_boxes(tmp_path: Path) -> None:
    a = _film(tmp_path, "a.png", 200, 100)
    b = _film(tmp_path, "b.png", 64, 128)
    c = _film(tmp_path, "c.png", 320, 320)
    assert film_size(a) == (200, 100)
    boxes = [
        [(90, 20, 30, 20)],  # a: peak (8, 16) -> (103.1, 26.6): inside
        [(0, 0, 32, 64), (40, 100, 10, 10)],  # b: peak (30, 30) -> (61, 124): outside both
        [(0, 0, 160, 320)],  # c: peak (4, 2) -> (25, 45): inside the left half
    ]
    films = play(
        torch.zeros(3, 1, 32, 32),
        [a, b, c],
        ["p1", "p2", "p3"],
        boxes,
        SQUASH,
        _stub([(8, 16), (30, 30), (4, 2)]),
        batch_size=2,  # two batches: the stub is called per batch
    )
    assert [film.hit for film in films] == [True, False, True]
    assert films[0].peak == (16.5 * 200 / 32, 8.5 * 100 / 32)
    result = score_films(films, resamples=200)
    assert result.hit_rate == pytest.approx(2 / 3)
    chance = [600 / 20000, (32 * 64 + 100) / (64 * 128), 0.5]
    assert result.chance_rate == pytest.approx(np.mean(chance))
    low, high = result.interval
    assert 0.0 <= low <= 2 / 3 <= high <= 1.0
    assert result.metrics()["site/pointing/n"] == 3
    grouped = score_by_group(result, {"view": ("AP", "PA", "AP")}, resamples=20)
    (ap_name, ap), (pa_name, pa) = grouped.groups["view"]
    assert (ap_name, ap.n, ap.hit_rate, ap.chance_rate) == ("AP", 2, 1.0, np.mean(chance[::2]))
    assert (pa_name, pa.n, pa.hit_rate) == ("PA", 1, 0.0)
    assert grouped.metrics()["site/pointing/subgroup/view=AP/hit_rate"] == 1.0
    assert grouped.metrics()["site/pointing/hit_rate"] == result.hit_rate


def test_a_heatmap_without_evidence_is_a_miss(tmp_path: Path) -> None:
    film = _film(tmp_path, "a.png", 100, 100)
    films = play(
        torch.zeros(1, 1, 32, 32),
        [film],
        ["p"],
        [[(0, 0, 100, 100)]],
        SQUASH,
        lambda images: np.zeros((len(images), 32, 32)),
    )
    assert films[0].peak is None and not films[0].hit
    assert score_films(films, resamples=20).without_peak == 1


def test_the_evaluation_plays_only_pneumonia_films_with_boxes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """site_pass.pointing_game picks the films from the test records' ``boxes`` metadata and
    asks Grad-CAM for their heatmaps (stubbed here: the peak is what is being tested)."""
    root = tmp_path / "site"
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
    normal = _film(root / "NORMAL", "n.png", 100, 100)
    hit = _film(root / "PNEUMONIA", "hit.png", 320, 160)
    miss = _film(root / "PNEUMONIA", "miss.png", 320, 160)
    _film(root / "PNEUMONIA", "no_boxes.png", 320, 160)
    datamodule = ChestXRayDataModule(root, image_size=32, unsplit="test", num_workers=0)
    datamodule.setup("test")
    # What a manifest's boxes column gives each record (Record.metadata).
    boxes = {normal: "0 0 100 100", hit: "0 0 160 80", miss: "160 80 160 80"}
    datamodule.split_records["test"] = [
        dataclasses.replace(r, meta=(("boxes", boxes[r.path]),) if r.path in boxes else ())
        for r in datamodule.split_records["test"]
    ]
    played: list[int] = []

    def gradcam(net: torch.nn.Module, images: torch.Tensor) -> np.ndarray:
        played.append(len(images))
        maps = np.zeros((len(images), 32, 32))
        maps[:, 2, 2] = 1.0  # the top left: (25, 7.5) on a 320x160 film
        return maps

    monkeypatch.setattr("cxrnet.inference.gradcam.gradcam", gradcam)
    model = ClassifierModule(
        net={"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8},
        optimizer={"_target_": "torch.optim.Adam"},
    )
    result = site_pass.pointing_game(model, datamodule, ReportSettings(resamples=20))
    assert result is not None and played == [2]
    assert sorted((Path(f.file).name, f.hit) for f in result.films) == [
        ("hit.png", True),
        ("miss.png", False),
    ]
    assert result.chance_rate == pytest.approx(0.25)
    capped = site_pass.pointing_game(model, datamodule, ReportSettings(resamples=20), 1)
    assert capped is not None and capped.n == 1
