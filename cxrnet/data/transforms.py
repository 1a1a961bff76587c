"""Training augmentation, built from plain values so a YAML file (or a sweep) can set it."""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2

from cxrnet.data.augment_settings import check_intensity


@dataclass(frozen=True)
class AffineRecipe:
    """The ranges both augmentation paths draw from, ``strength`` already applied.

    ``rotate`` in degrees (±), ``zoom`` and ``shift`` as fractions (1 ± zoom per axis, ± shift
    of the width and height); ``hflip`` mirrors half the images. The CPU path
    (``build_train_transform``) and the batched device path (``cxrnet.data.batch_augment``) both
    start from this, so ``data.augment.*`` means the same thing on either.

    After the geometry, the grey levels (x in [0, 1]): ``contrast`` multiplies by 1 + U(-c, c)
    and ``brightness`` adds U(-b, b), x·(1 + a) + b clipped to [0, 1] (the factor scales about
    black, as albumentations 2's ``RandomBrightnessContrast`` computes it); then ``gamma`` raises
    to the power 1 + U(-g, g) (above 1 darkens the mid-greys; ``RandomGamma``). Uniform in the
    exponent, not its log: the stock transform's draw, so the CPU path stays albumentations'.
    """

    rotate: float = 20.0
    zoom: float = 0.2
    shift: float = 0.1
    hflip: bool = False
    brightness: float = 0.0
    contrast: float = 0.0
    gamma: float = 0.0

    @classmethod
    def scaled(
        cls,
        rotate: float = 20.0,
        zoom: float = 0.2,
        shift: float = 0.1,
        hflip: bool = False,
        strength: float = 1.0,
        *,
        brightness: float = 0.0,
        contrast: float = 0.0,
        gamma: float = 0.0,
    ) -> AffineRecipe:
        """``strength`` scales rotation, zoom and shift together, one knob for searches.

        Not the intensity ranges: a search over ``strength`` keeps the film's exposure
        variation as configured, and the intensity ranges are set on their own.
        """
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, got {strength}")
        return cls(
            rotate * strength,
            zoom * strength,
            shift * strength,
            bool(hflip),
            check_intensity("brightness", brightness),
            check_intensity("contrast", contrast),
            check_intensity("gamma", gamma),
        )

    @property
    def has_affine(self) -> bool:
        return bool(self.rotate or self.zoom or self.shift)

    @property
    def has_linear_intensity(self) -> bool:
        """Whether contrast or brightness changes the grey levels (one multiply-add)."""
        return bool(self.brightness or self.contrast)

    @property
    def has_intensity(self) -> bool:
        return self.has_linear_intensity or bool(self.gamma)


def build_train_transform(
    rotate: float = 20.0,
    zoom: float = 0.2,
    shift: float = 0.1,
    hflip: bool = False,
    strength: float = 1.0,
    *,
    brightness: float = 0.0,
    contrast: float = 0.0,
    gamma: float = 0.0,
) -> A.Compose | None:
    """The seed's Keras ``ImageDataGenerator`` recipe as one albumentations ``Affine``, then
    the optional intensity changes (``AffineRecipe``), on the uint8 film.

    ``strength`` scales rotation, zoom and shift together, one knob for searches. Borders are
    filled by repeating the edge, as Keras' default ``fill_mode='nearest'`` does. Returns None
    when every augmentation is off, so the loader skips the call entirely.
    """
    recipe = AffineRecipe.scaled(
        rotate, zoom, shift, hflip, strength, brightness=brightness, contrast=contrast, gamma=gamma
    )
    transforms: list[A.BasicTransform] = []
    if recipe.has_affine:
        transforms.append(
            A.Affine(
                rotate=(-recipe.rotate, recipe.rotate),
                scale=(1.0 - recipe.zoom, 1.0 + recipe.zoom),
                translate_percent=(-recipe.shift, recipe.shift),
                border_mode=cv2.BORDER_REPLICATE,
                p=1.0,
            )
        )
    if recipe.hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if recipe.has_linear_intensity:
        # uint8: x·alpha + beta·255 through a clipped lookup table, truncated to whole levels.
        # About black: albumentations 2.0.8's docstring gives (x - mean)·alpha + mean, but its
        # code multiplies x (tests/data/test_intensity_augment.py pins what it does).
        transforms.append(
            A.RandomBrightnessContrast(
                brightness_limit=(-recipe.brightness, recipe.brightness),
                contrast_limit=(-recipe.contrast, recipe.contrast),
                brightness_by_max=True,
                ensure_safe_range=False,
                p=1.0,
            )
        )
    if recipe.gamma:
        transforms.append(
            A.RandomGamma(
                gamma_limit=(100 * (1 - recipe.gamma), 100 * (1 + recipe.gamma)),
                p=1.0,
            )
        )
    return A.Compose(transforms) if transforms else None
