"""Training augmentation, built from plain values so a YAML file (or a sweep) can set it."""

from __future__ import annotations

import albumentations as A
import cv2


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
    if strength < 0:
        raise ValueError(f"augmentation strength must be >= 0, got {strength}")
    rotate, zoom, shift = rotate * strength, zoom * strength, shift * strength
    transforms: list[A.BasicTransform] = []
    if rotate or zoom or shift:
        transforms.append(
            A.Affine(
                rotate=(-rotate, rotate),
                scale=(1.0 - zoom, 1.0 + zoom),
                translate_percent=(-shift, shift),
                border_mode=cv2.BORDER_REPLICATE,
                p=1.0,
            )
        )
    if hflip:
        transforms.append(A.HorizontalFlip(p=0.5))
    return A.Compose(transforms) if transforms else None
