"""The augmentation recipe, measured on constructed images: each range as configured."""

from __future__ import annotations

import math

import albumentations as A
import numpy as np
import pytest

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.transforms import build_train_transform

SIZE = 129  # odd, so the centre is a pixel
CENTRE = SIZE // 2
DRAWS = 120


def blank(value: int = 40) -> np.ndarray:
    return np.full((SIZE, SIZE), value, dtype=np.uint8)


def bar() -> np.ndarray:
    """A horizontal bar through the centre, well inside the frame at any tested angle."""
    image = blank()
    image[CENTRE - 1 : CENTRE + 2, CENTRE - 40 : CENTRE + 41] = 220
    return image


def square(side: int) -> np.ndarray:
    image = blank()
    half = side // 2
    image[CENTRE - half : CENTRE + half, CENTRE - half : CENTRE + half] = 220
    return image


def bright(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.nonzero(image > 130)


def angle_of(image: np.ndarray) -> float:
    """Orientation of the bright pixels' principal axis, in degrees from horizontal."""
    rows, cols = bright(image)
    x, y = cols - cols.mean(), rows - rows.mean()
    return math.degrees(0.5 * math.atan2(2 * (x * y).mean(), (x * x).mean() - (y * y).mean()))


def extent(image: np.ndarray) -> tuple[int, int]:
    rows, cols = bright(image)
    return int(cols.max() - cols.min() + 1), int(rows.max() - rows.min() + 1)


def centroid(image: np.ndarray) -> tuple[float, float]:
    rows, cols = bright(image)
    return float(cols.mean()), float(rows.mean())


def draws(transform: A.Compose, image: np.ndarray, count: int = DRAWS) -> list[np.ndarray]:
    transform.set_random_seed(0)
    return [transform(image=image)["image"] for _ in range(count)]


def only(**kwargs: float | bool) -> A.Compose:
    settings = {"rotate": 0.0, "zoom": 0.0, "shift": 0.0, "hflip": False} | kwargs
    transform = build_train_transform(**settings)
    assert transform is not None
    return transform


@pytest.mark.parametrize(("rotate", "strength"), [(20.0, 1.0), (20.0, 0.5), (8.0, 1.0)])
def test_rotation_stays_within_the_configured_range_and_uses_it(
    rotate: float, strength: float
) -> None:
    limit = rotate * strength
    angles = [angle_of(out) for out in draws(only(rotate=rotate, strength=strength), bar())]
    assert max(abs(a) for a in angles) <= limit + 1.0
    assert min(angles) < -0.75 * limit and max(angles) > 0.75 * limit  # both ways, near the end


@pytest.mark.parametrize(("zoom", "strength"), [(0.2, 1.0), (0.2, 0.5)])
def test_zoom_scales_each_axis_within_the_configured_range(zoom: float, strength: float) -> None:
    side, limit = 40, zoom * strength
    factors = [
        factor
        for out in draws(only(zoom=zoom, strength=strength), square(side))
        for factor in (extent(out)[0] / side, extent(out)[1] / side)
    ]
    tolerance = 2 / side  # a pixel of resampling blur on either edge
    assert 1 - limit - tolerance <= min(factors) < 1 - 0.7 * limit
    assert 1 + 0.7 * limit < max(factors) <= 1 + limit + tolerance


@pytest.mark.parametrize(("shift", "strength"), [(0.1, 1.0), (0.1, 0.5)])
def test_shift_moves_by_at_most_the_configured_fraction(shift: float, strength: float) -> None:
    limit = shift * strength * SIZE
    start = np.array(centroid(square(10)))
    moves = (
        np.array([centroid(out) for out in draws(only(shift=shift, strength=strength), square(10))])
        - start
    )
    assert np.abs(moves).max() <= limit + 1.0
    for axis in (0, 1):  # horizontal and vertical shifts, each both ways
        assert moves[:, axis].min() < -0.7 * limit and moves[:, axis].max() > 0.7 * limit


def test_flip_is_horizontal_only_and_happens_about_half_the_time() -> None:
    image = np.arange(SIZE * SIZE, dtype=np.int64).reshape(SIZE, SIZE).astype(np.uint8)
    outputs = draws(only(hflip=True), image)
    flipped = sum(np.array_equal(out, image[:, ::-1]) for out in outputs)
    unchanged = sum(np.array_equal(out, image) for out in outputs)
    assert flipped + unchanged == DRAWS  # nothing else: no vertical flip, no resampling
    assert 0.3 * DRAWS < flipped < 0.7 * DRAWS


def test_uncovered_borders_repeat_the_edge_instead_of_going_black() -> None:
    # Zoomed out and shifted, the film no longer covers the frame; Keras' fill_mode='nearest'
    # repeats the edge pixels there, so no black (or any new) value may appear.
    image = blank(90)
    image[CENTRE - 5 : CENTRE + 5, CENTRE - 5 : CENTRE + 5] = 200
    transform = only(rotate=30.0, zoom=0.5, shift=0.3)
    for out in draws(transform, image, count=40):
        assert out.min() >= 90, "border filled with a value the film does not have"
        assert (out[0].min(), out[-1].min(), out[:, 0].min(), out[:, -1].min()) == (90,) * 4


def test_strength_scales_rotation_zoom_and_shift_but_not_flip() -> None:
    transform = build_train_transform(rotate=20, zoom=0.2, shift=0.1, hflip=True, strength=0.5)
    assert transform is not None
    affine, flip = transform.transforms
    assert isinstance(affine, A.Affine) and isinstance(flip, A.HorizontalFlip)
    assert affine.rotate == pytest.approx((-10, 10))
    assert affine.scale == {"x": pytest.approx((0.9, 1.1)), "y": pytest.approx((0.9, 1.1))}
    assert affine.translate_percent == {
        "x": pytest.approx((-0.05, 0.05)),
        "y": pytest.approx((-0.05, 0.05)),
    }
    assert flip.p == 0.5


def test_strength_zero_leaves_only_the_flip() -> None:
    assert build_train_transform(20, 0.2, 0.1, hflip=False, strength=0) is None
    transform = build_train_transform(20, 0.2, 0.1, hflip=True, strength=0)
    assert transform is not None
    assert [type(t) for t in transform.transforms] == [A.HorizontalFlip]


def test_negative_strength_is_rejected() -> None:
    with pytest.raises(ValueError, match="strength must be >= 0, got -1"):
        build_train_transform(strength=-1)


def test_data_module_builds_the_configured_recipe(synthetic_root) -> None:
    dm = ChestXRayDataModule(
        root=synthetic_root,
        image_size=32,
        num_workers=0,
        cache_dir=None,
        augment={"rotate": 12, "zoom": 0.1, "shift": 0.2, "hflip": True, "strength": 0.5},
    )
    dm.setup("fit")
    affine, flip = dm.datasets["train"].transform.transforms
    assert affine.rotate == pytest.approx((-6, 6))
    assert affine.scale["x"] == pytest.approx((0.95, 1.05))
    assert affine.translate_percent["y"] == pytest.approx((-0.1, 0.1))
    assert isinstance(flip, A.HorizontalFlip)
    assert dm.datasets["val"].transform is None and dm.datasets["test"].transform is None
