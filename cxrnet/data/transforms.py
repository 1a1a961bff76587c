"""Training augmentation, built from plain values so a YAML file (or a sweep) can set it."""

from __future__ import annotations

from dataclasses import dataclass

import albumentations as A
import cv2


@dataclass(frozen=True)
class AffineRecipe:
    """The ranges both augmentation paths draw from, ``strength`` already applied.

    ``rotate`` in degrees (±), ``zoom`` and ``shift`` as fractions (1 ± zoom per axis, ± shift
    of the width and height); ``hflip`` mirrors half the images. The CPU path
    (``build_train_transform``) and the batched device path (``cxrnet.data.batch_augment``) both
    start from this, so ``data.augment.*`` means the same thing on either.
    """

    rotate: float = 20.0
    zoom: float = 0.2
    shift: float = 0.1
    hflip: bool = False

    @classmethod
    def scaled(
        cls,
        rotate: float = 20.0,
        zoom: float = 0.2,
        shift: float = 0.1,
        hflip: bool = False,
        strength: float = 1.0,
    ) -> AffineRecipe:
        """``strength`` scales rotation, zoom and shift together, one knob for searches."""
        if strength < 0:
            raise ValueError(f"augmentation strength must be >= 0, got {strength}")
        return cls(rotate * strength, zoom * strength, shift * strength, bool(hflip))

    @property
    def has_affine(self) -> bool:
        return bool(self.rotate or self.zoom or self.shift)


def build_train_transform(
    rotate: float = 20.0,
    zoom: float = 0.2,
    shift: float = 0.1,
    hflip: bool = False,
    strength: float = 1.0,
) -> A.Compose | None:
    """The seed's Keras ``ImageDataGenerator`` recipe as one albumentations ``Affine``.

    ``strength`` scales rotation, zoom and shift together, one knob for searches. Borders are
    filled by repeating the edge, as Keras' default ``fill_mode='nearest'`` does. Returns None
    when every augmentation is off, so the loader skips the call entirely.
    """
    recipe = AffineRecipe.scaled(rotate, zoom, shift, hflip, strength)
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
    return A.Compose(transforms) if transforms else None
