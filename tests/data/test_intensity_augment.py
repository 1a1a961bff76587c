"""Intensity augmentation (data.augment.contrast, brightness, gamma): the drawn distributions on
either path, defaults that change nothing, refused settings, and a training run that uses it."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
from helpers.console import QUICK, run_folder, run_train
from helpers.datamodule import make_dm
from lightning.fabric.utilities.apply_func import move_data_to_device

from cxrnet.data.augment_settings import check_augment
from cxrnet.data.batch_augment import (
    DeviceAugment,
    DeviceBatch,
    augment_batch,
    draw_intensity,
    draw_params,
)
from cxrnet.data.dataset import SeededSample
from cxrnet.data.transforms import AffineRecipe, build_train_transform
from cxrnet.user_errors import ConfigError

DRAWS = 600
NO_GEOMETRY = {"rotate": 0.0, "zoom": 0.0, "shift": 0.0, "hflip": False}
UNIFORM_STD = 1 / math.sqrt(3)  # of U(-1, 1)


def cpu_draws(image: np.ndarray, count: int = DRAWS, **settings: float) -> np.ndarray:
    """``count`` seeded CPU-path outputs of ``image`` (uint8), stacked."""
    transform = build_train_transform(**(NO_GEOMETRY | settings))
    assert transform is not None
    transform.set_random_seed(0)
    return np.stack([transform(image=image)["image"] for _ in range(count)])


def device_draws(image: np.ndarray, count: int = DRAWS, **settings: float) -> np.ndarray:
    """The device path's outputs of ``image`` for seeds 0..count-1, in grey levels (float)."""
    augment = DeviceAugment(AffineRecipe.scaled(**(NO_GEOMETRY | settings)))
    images = torch.from_numpy(np.repeat(image[None, None], count, axis=0))
    labels = torch.zeros(count, dtype=torch.long)
    out, _ = augment.finish(augment.prepare(SeededSample(images, labels, torch.arange(count))))
    return out[:, 0].double().numpy() * 255


def assert_uniform(values: np.ndarray, centre: float, half_width: float) -> None:
    """``values`` look like U(centre - half_width, centre + half_width): mean, spread, ends."""
    assert abs(values.mean() - centre) < 0.1 * half_width
    assert values.std() == pytest.approx(half_width * UNIFORM_STD, rel=0.1)
    assert values.min() >= centre - half_width - 0.01 and values.max() <= centre + half_width + 0.01
    assert values.min() < centre - 0.9 * half_width and values.max() > centre + 0.9 * half_width


def flat(level: int, size: int = 8) -> np.ndarray:
    return np.full((size, size), level, dtype=np.uint8)


# --- what each setting draws, on either path -------------------------------------------------


def test_cpu_contrast_multiplies_the_grey_levels_by_one_plus_uniform() -> None:
    # A level of 100 stays inside [0, 255] for any factor in 1 ± 0.3: nothing is clipped.
    out = cpu_draws(flat(100), contrast=0.3)[:, 0, 0].astype(float)
    factor = (out + 0.5) / 100  # the lookup table truncates to a whole level
    assert_uniform(factor, 1.0, 0.3)
    # About black, not the film's mean: a flat film keeps no constant level but moves.
    assert len(np.unique(out)) > 20


def test_cpu_brightness_adds_a_uniform_fraction_of_the_full_range() -> None:
    out = cpu_draws(flat(128), brightness=0.2)[:, 0, 0].astype(float)
    assert_uniform((out + 0.5 - 128) / 255, 0.0, 0.2)


def test_cpu_gamma_raises_to_one_plus_uniform() -> None:
    out = cpu_draws(flat(128), gamma=0.4)[:, 0, 0].astype(float)
    exponent = np.log((out + 0.5) / 255) / np.log(128 / 255)
    assert_uniform(exponent, 1.0, 0.4)


def test_device_draws_the_same_distributions_per_image_from_its_seed() -> None:
    recipe = AffineRecipe.scaled(brightness=0.2, contrast=0.3, gamma=0.4)
    drawn = draw_intensity(range(4000), recipe)
    assert_uniform(drawn.contrast.numpy(), 1.0, 0.3)
    assert_uniform(drawn.brightness.numpy(), 0.0, 0.2)
    assert_uniform(drawn.gamma.numpy(), 1.0, 0.4)
    # Independent of each other, and of the geometry drawn from the same seed.
    geometry = draw_params(range(4000), AffineRecipe.scaled(rotate=20))
    values = [drawn.contrast, drawn.brightness, drawn.gamma, geometry.angle]
    correlation = torch.corrcoef(torch.stack(values)) - torch.eye(len(values), dtype=torch.float64)
    assert float(correlation.abs().max()) < 0.1
    # Each image's draw depends on its seed alone.
    again = draw_intensity([3999, 7, 0], recipe)
    assert torch.equal(again.gamma, drawn.gamma[[3999, 7, 0]])


@pytest.mark.parametrize(
    "settings",
    [
        {"contrast": 0.3},
        {"brightness": 0.2},
        {"gamma": 0.4},
        {"contrast": 0.2, "brightness": 0.15, "gamma": 0.3},
    ],
)
def test_cpu_and_device_paths_give_films_the_same_grey_level_distribution(settings) -> None:
    # Dark, middle and bright pixels: contrast about black spreads the bright ones most, and
    # clipping and gamma bend each differently, so the order of the steps shows too.
    image = np.array([[10, 60, 128, 200, 250]], dtype=np.uint8)
    cpu = cpu_draws(image, **settings)[:, 0].astype(float)
    device = device_draws(image, **settings)[:, 0]
    # The CPU path truncates each lookup (contrast and brightness are one, gamma another) to a
    # whole level: about half a level lower on average each.
    lookups = bool(settings.keys() & {"contrast", "brightness"}) + ("gamma" in settings)
    assert np.abs(cpu.mean(axis=0) + 0.5 * lookups - device.mean(axis=0)).max() < 3.0
    assert np.abs(cpu.std(axis=0) - device.std(axis=0)).max() < 0.1 * device.std(axis=0).max()
    assert device.min() >= 0 and device.max() <= 255


def test_strength_scales_the_geometry_and_not_the_intensity() -> None:
    recipe = AffineRecipe.scaled(rotate=20, strength=0.5, brightness=0.1, contrast=0.2, gamma=0.3)
    assert recipe.rotate == 10
    assert (recipe.brightness, recipe.contrast, recipe.gamma) == (0.1, 0.2, 0.3)
    transform = build_train_transform(strength=0, brightness=0.1, contrast=0.2, gamma=0.3)
    assert transform is not None
    contrast, gamma = transform.transforms
    assert isinstance(contrast, A.RandomBrightnessContrast) and contrast.p == 1.0
    assert contrast.contrast_limit == pytest.approx((-0.2, 0.2))
    assert contrast.brightness_limit == pytest.approx((-0.1, 0.1))
    assert isinstance(gamma, A.RandomGamma) and gamma.p == 1.0
    assert gamma.gamma_limit == pytest.approx((70, 130))


# --- off changes nothing ---------------------------------------------------------------------


def test_defaults_build_exactly_the_recipe_they_built_before() -> None:
    image = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
    for hflip in (False, True):
        ours = build_train_transform(hflip=hflip)
        assert ours is not None
        before = [
            A.Affine(
                rotate=(-20.0, 20.0),
                scale=(0.8, 1.2),
                translate_percent=(-0.1, 0.1),
                border_mode=cv2.BORDER_REPLICATE,
                p=1.0,
            )
        ] + ([A.HorizontalFlip(p=0.5)] if hflip else [])
        theirs = A.Compose(before)
        assert [type(t) for t in ours.transforms] == [type(t) for t in theirs.transforms]
        ours.set_random_seed(5)
        theirs.set_random_seed(5)
        for _ in range(10):
            assert np.array_equal(ours(image=image)["image"], theirs(image=image)["image"])
    assert build_train_transform(**NO_GEOMETRY) is None


def test_device_geometry_drawn_from_a_seed_is_what_it_was_before() -> None:
    # Before the intensity settings each seed drew its six geometry values alone.
    recipe = AffineRecipe.scaled(rotate=20, zoom=0.2, shift=0.1, hflip=True)
    drawn = draw_params(range(50), recipe)
    generator = torch.Generator()
    for seed in range(50):
        generator.manual_seed(seed)
        uniform = torch.rand(6, generator=generator, dtype=torch.float64)
        assert float(drawn.angle[seed]) == float((uniform[0] * 2 - 1) * 20)
        assert float(drawn.shift_y[seed]) == float((uniform[4] * 2 - 1) * 0.1)
        assert bool(drawn.flip[seed]) == bool(uniform[5] < 0.5)


def test_device_path_with_intensity_off_is_the_warp_alone_bit_for_bit() -> None:
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (6, 1, 24, 24))).to(
        torch.uint8
    )
    labels = torch.zeros(6, dtype=torch.long)
    recipe = AffineRecipe.scaled(rotate=20, zoom=0.2, shift=0.1, hflip=True)
    assert not recipe.has_intensity
    augment = DeviceAugment(recipe)
    prepared = augment.prepare(SeededSample(images, labels, torch.arange(6)))
    assert prepared.intensity is None
    out, _ = augment.finish(prepared)
    assert torch.equal(out, augment_batch(images, prepared.theta, prepared.flip))


def test_on_device_batch_with_intensity_crosses_to_the_device_and_back(
    synthetic_root: Path,
) -> None:
    dm = make_dm(synthetic_root, augment={"contrast": 0.2, "gamma": 0.2, "on_device": True})
    dm.setup("fit")
    raw = next(iter(dm.train_dataloader()))
    prepared = dm.on_before_batch_transfer(raw, 0)
    assert isinstance(prepared, DeviceBatch) and prepared.intensity is not None
    moved = move_data_to_device(prepared, torch.device("cpu"))
    assert isinstance(moved, DeviceBatch) and moved.intensity is not None
    images, labels = dm.on_after_batch_transfer(moved, 0)
    assert images.dtype == torch.float32 and images.shape == raw.image.shape
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    plain = DeviceAugment(AffineRecipe.scaled()).finish(prepared._replace(intensity=None))[0]
    assert not torch.equal(images, plain)  # the grey levels did change
    assert torch.equal(labels, raw.label)


# --- settings that cannot work ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("contrast", 1.0, "[0, 1)"),
        ("contrast", -0.1, "[0, 1)"),
        ("gamma", 1.0, "[0, 0.99]"),
        ("brightness", 1.5, "[0, 1]"),
        ("brightness", "a lot", "[0, 1]"),
        ("gamma", True, "[0, 0.99]"),
        ("contrast", None, "[0, 1)"),
    ],
)
def test_an_intensity_outside_its_range_is_refused_naming_the_setting(
    synthetic_root: Path, key: str, value, allowed: str
) -> None:
    expected = f"data.augment.{key}={value!r} must be a number in {allowed}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        make_dm(synthetic_root, augment={key: value})


def test_an_unknown_augment_key_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"data\.augment has no setting contrst; it takes rotate"):
        check_augment({"contrast": 0.1, "contrst": 0.2})
    check_augment({"rotate": 10, "contrast": 0.2, "gamma": 0.0, "on_device": True})


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.augment.contrast=1.0", "data.augment.contrast=1.0 must be a number in [0, 1)"),
        ("+data.augment.contrst=0.2", "data.augment has no setting contrst; it takes rotate"),
    ],
)
def test_cxrnet_train_refuses_the_setting_before_reading_any_film(
    tmp_path: Path, override: str, message: str
) -> None:
    done = run_train([*QUICK, override], tmp_path)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert f"error: {message}" in done.stderr
    # The preflight refused it: the built-in synthetic films were not even generated.
    assert not (tmp_path / "cache" / "synthetic").exists()


# --- a run that uses it ----------------------------------------------------------------------


@pytest.mark.slow
def test_cxrnet_train_with_intensity_augmentation_runs_to_completion(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        [
            *QUICK,
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "data.augment.contrast=0.2",
            "data.augment.brightness=0.1",
            "data.augment.gamma=0.2",
            "trainer.max_epochs=1",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads((run_folder(done.stdout) / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert "data.augment.contrast=0.2" in record["overrides"]
    assert np.isfinite(record["metrics"]["val/auroc"])
