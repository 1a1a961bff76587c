"""The pointing game: does the Grad-CAM peak of a pneumonia film fall inside one of the opacity
boxes a reader drew on it, and how often would a point dropped at random do as well?

Boxes are ``x y w h`` in pixels of the original film, several separated by ``;`` (the manifest's
``boxes`` column). The heatmap lives at the model's input size, so its peak is mapped back
through the decoding (squash or letterbox) to the original film, whose size is read from the
file header without decoding it. The chance rate of a film is the fraction of its area the
union of its boxes covers; the game's chance rate is that fraction averaged over the films.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from cxrnet.data.decode import DecodeParams
from cxrnet.data.records import is_dicom
from cxrnet.evaluation.bootstrap import PatientDraws, bootstrap_weighted
from cxrnet.evaluation.proportions import widened
from cxrnet.evaluation.subgroup_columns import DEFAULT_AGE_BANDS, category_order
from cxrnet.user_errors import DataError

Box = tuple[float, float, float, float]  # x, y, width, height in original pixels
# (N, 1, S, S) films at model input size -> (N, S, S) heatmaps (Grad-CAM, or a stub in tests).
HeatmapFn = Callable[[torch.Tensor], np.ndarray]
_EXIF_ORIENTATION = 0x0112


def parse_boxes(text: str, where: str = "") -> list[Box]:
    """``"x y w h;x y w h"`` as boxes; empty text is no box. A malformed box is an error
    naming the film (``where``) and the expected form."""
    boxes = []
    for part in text.split(";"):
        if not part.strip():
            continue
        try:
            values = [float(value) for value in part.split()]
        except ValueError:
            values = []
        if len(values) != 4 or values[2] <= 0 or values[3] <= 0:
            raise DataError(
                f"{where}: box {part.strip()!r} is not 'x y w h' (pixels of the original film, "
                "width and height > 0; several boxes separated by ';'); fix the boxes column"
            )
        boxes.append((values[0], values[1], values[2], values[3]))
    return boxes


def film_size(path: Path) -> tuple[int, int]:
    """(width, height) of the original film from its header, without decoding the pixels."""
    path = Path(path)
    try:
        if is_dicom(path):
            import pydicom

            header = pydicom.dcmread(path, stop_before_pixels=True)
            return int(header.Columns), int(header.Rows)
        from PIL import Image

        with Image.open(path) as image:
            width, height = image.size
            # Decoding applies the EXIF orientation; a quarter turn swaps the sides.
            turned = image.getexif().get(_EXIF_ORIENTATION) in (5, 6, 7, 8)
            return (height, width) if turned else (width, height)
    except Exception as error:  # any header a reader cannot parse: name the film
        raise DataError(f"{path}: cannot read the film's size ({error})") from error


def to_original(
    row: float, col: float, size: tuple[int, int], params: DecodeParams
) -> tuple[float, float]:
    """The point (x, y) of the original film (``size``: width, height) under the centre of
    the input pixel (``row``, ``col``), inverting ``fit_to_square``'s squash or letterbox."""
    width, height = size
    side = params.image_size
    if params.resize == "squash":
        return (col + 0.5) * width / side, (row + 0.5) * height / side
    scale = side / max(width, height)
    new_w = min(side, max(1, round(width * scale)))
    new_h = min(side, max(1, round(height * scale)))
    left, top = (side - new_w) // 2, (side - new_h) // 2
    return (col + 0.5 - left) * width / new_w, (row + 0.5 - top) * height / new_h


def inside(point: tuple[float, float], boxes: Sequence[Box]) -> bool:
    x, y = point
    return any(bx <= x <= bx + bw and by <= y <= by + bh for bx, by, bw, bh in boxes)


def covered_fraction(boxes: Sequence[Box], size: tuple[int, int]) -> float:
    """The fraction of the film's area inside the union of ``boxes`` (clipped to the film):
    exact, from the grid the box edges cut the film into."""
    width, height = size
    clipped = [
        (max(0.0, x), max(0.0, y), min(float(width), x + w), min(float(height), y + h))
        for x, y, w, h in boxes
    ]
    clipped = [(x0, y0, x1, y1) for x0, y0, x1, y1 in clipped if x1 > x0 and y1 > y0]
    if not clipped:
        return 0.0
    xs = np.unique([v for x0, _, x1, _ in clipped for v in (x0, x1)])
    ys = np.unique([v for _, y0, _, y1 in clipped for v in (y0, y1)])
    cells = np.zeros((len(ys) - 1, len(xs) - 1), dtype=bool)
    for x0, y0, x1, y1 in clipped:
        cols = slice(np.searchsorted(xs, x0), np.searchsorted(xs, x1))
        rows = slice(np.searchsorted(ys, y0), np.searchsorted(ys, y1))
        cells[rows, cols] = True
    area = np.outer(np.diff(ys), np.diff(xs))
    return float(area[cells].sum() / (width * height))


@dataclass(frozen=True)
class PointingFilm:
    """One pneumonia film in the game: where its heatmap peaks (original pixels) and its boxes."""

    file: str
    patient: str
    peak: tuple[float, float] | None  # None: the heatmap is zero everywhere (no evidence)
    boxes: tuple[Box, ...]
    size: tuple[int, int]

    @property
    def hit(self) -> bool:
        return self.peak is not None and inside(self.peak, self.boxes)

    @property
    def chance(self) -> float:
        return covered_fraction(self.boxes, self.size)


@dataclass(frozen=True)
class PointingResult:
    films: tuple[PointingFilm, ...]
    hit_rate: float
    interval: tuple[float, float]
    chance_rate: float
    # Per subgroup column: (category, the game on that category's films alone).
    groups: Mapping[str, tuple[tuple[str, PointingResult], ...]] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.films)

    @property
    def without_peak(self) -> int:
        return sum(film.peak is None for film in self.films)

    def metrics(self, prefix: str = "site/pointing") -> dict[str, float]:
        values = {
            f"{prefix}/n": float(self.n),
            f"{prefix}/hit_rate": self.hit_rate,
            f"{prefix}/hit_rate_ci_low": self.interval[0],
            f"{prefix}/hit_rate_ci_high": self.interval[1],
            f"{prefix}/chance_rate": self.chance_rate,
        }
        for column, parts in self.groups.items():
            for category, part in parts:
                name = f"{column}={category.replace('/', '_')}"
                values |= part.metrics(f"{prefix}/subgroup/{name}")
        return values


def heatmap_peak(heatmap: np.ndarray) -> tuple[int, int] | None:
    """(row, col) of the heatmap's maximum (the first in reading order on ties); None when
    the map is zero everywhere, which points nowhere."""
    if not np.any(heatmap > 0):
        return None
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return int(row), int(col)


def score_films(
    films: Sequence[PointingFilm],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PointingResult:
    """Hit rate with its patient-bootstrap interval, and the chance rate, over ``films``."""
    if not films:
        raise ValueError("the pointing game needs at least one film with boxes")
    hits = np.array([film.hit for film in films], dtype=np.float64)

    def resampled(draws: PatientDraws) -> dict[str, np.ndarray]:
        weights = draws.weights()
        return {"hit_rate": weights @ hits / weights.sum(axis=1)}

    interval = bootstrap_weighted(
        resampled,
        len(films),
        groups=[film.patient for film in films],
        resamples=resamples,
        seed=seed,
        level=level,
    )["hit_rate"]
    interval = widened(interval, int(hits.sum()), len(films), level)  # exact at 0 and 1
    chance = float(np.mean([film.chance for film in films]))
    return PointingResult(tuple(films), float(hits.mean()), interval, chance)


def score_by_group(
    result: PointingResult,
    columns: Mapping[str, Sequence[str]],
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    edges: Sequence[float] = DEFAULT_AGE_BANDS,
) -> PointingResult:
    """``result`` with the game scored again on each category of each of ``columns`` (one
    category per film, in ``result.films``' order; age bands cut at ``edges``)."""
    groups = {}
    for column, values in columns.items():
        parts = []
        for category in category_order(list(values), column, edges):
            films = [f for f, v in zip(result.films, values, strict=True) if v == category]
            parts.append((category, score_films(films, resamples, seed, level)))
        groups[column] = tuple(parts)
    return replace(result, groups=groups)


def play(
    images: torch.Tensor,
    files: Sequence[Path],
    patients: Sequence[str],
    boxes: Sequence[Sequence[Box]],
    params: DecodeParams,
    heatmaps: HeatmapFn,
    batch_size: int = 32,
) -> list[PointingFilm]:
    """Each film's heatmap peak, mapped back to its original pixels, with its boxes.

    ``images``: the films as the model sees them, (N, 1, S, S), in ``files``' order.
    """
    films = []
    for start in range(0, len(files), batch_size):
        maps = heatmaps(images[start : start + batch_size])
        for offset, heatmap in enumerate(maps):
            index = start + offset
            size = film_size(Path(files[index]))
            peak = heatmap_peak(np.asarray(heatmap))
            point = None if peak is None else to_original(*peak, size, params)
            films.append(
                PointingFilm(str(files[index]), patients[index], point, tuple(boxes[index]), size)
            )
    return films


def render_pointing_section(result: PointingResult, level: float) -> str:
    low, high = result.interval
    lines = [
        "### Pointing game (Grad-CAM peak inside an opacity box)",
        "",
        f"{result.n} PNEUMONIA films with boxes: the heatmap's peak falls inside a box on "
        f"{result.hit_rate:.3f} of them ({low:.3f}-{high:.3f}, {level:.0%} patient bootstrap); "
        f"a point placed at random would, on average, {result.chance_rate:.3f} (the fraction of "
        "each film the boxes cover). Peaks are mapped from the model's input back to the "
        "original film's pixels, where the boxes were drawn.",
    ]
    if result.without_peak:
        lines.append(
            f"{result.without_peak} film(s) had no positive Grad-CAM evidence anywhere and count "
            "as misses."
        )
    if result.groups:
        lines += ["", "| group | films | hit rate | chance rate |", "|---|---|---|---|"]
        for column, parts in result.groups.items():
            for category, part in parts:
                low, high = part.interval
                lines.append(
                    f"| {column}={category} | {part.n} | {part.hit_rate:.3f} ({low:.3f}-"
                    f"{high:.3f}) | {part.chance_rate:.3f} |"
                )
    return "\n".join(lines) + "\n"
