"""``data.augment``'s keys and the intensity ranges they allow, checked before any film is read.

Without albumentations, cv2 or torch: ``cxrnet-train`` runs these in its preflight, before it
imports any of them (``cxrnet.training.preflight``); the data module checks again, for callers
that build it directly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from cxrnet.user_errors import ConfigError

# Every key data.augment takes: the recipe (cxrnet.data.transforms), and where it runs.
AUGMENT_SETTINGS = (
    "rotate",
    "zoom",
    "shift",
    "hflip",
    "strength",
    "brightness",
    "contrast",
    "gamma",
    "on_device",
)
# Each intensity setting's range: low, high, whether high is allowed, and why the bound. Beyond
# it a film comes out all black or all white, or its factor reaches 0 (an image of one value).
_INTENSITY_RANGES = {
    "brightness": (0.0, 1.0, True, "a fraction of the full grey range"),
    "contrast": (0.0, 1.0, False, "the factor 1 ± contrast must stay above 0"),
    # albumentations' RandomGamma takes the range in percent, from 1 (a gamma of 0.01) up.
    "gamma": (0.0, 0.99, True, "the exponent 1 ± gamma must stay at 0.01 or more"),
}


def check_intensity(name: str, value: Any) -> float:
    """``data.augment.<name>`` (brightness, contrast or gamma) as a float within its range."""
    low, high, high_included, why = _INTENSITY_RANGES[name]
    allowed = f"[{low:g}, {high:g}{']' if high_included else ')'}"
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if is_number else math.nan
    inside = low <= number <= high if high_included else low <= number < high
    if not inside:
        raise ConfigError(
            f"data.augment.{name}={value!r} must be a number in {allowed} ({why}); "
            f"0 turns it off, e.g. data.augment.{name}=0.2"
        )
    return number


def check_augment(settings: Mapping[str, Any]) -> None:
    """``data.augment``'s keys and intensity ranges."""
    unknown = sorted(str(key) for key in settings if key not in AUGMENT_SETTINGS)
    if unknown:
        raise ConfigError(
            f"data.augment has no setting {', '.join(unknown)}; "
            f"it takes {', '.join(AUGMENT_SETTINGS)}"
        )
    for name in _INTENSITY_RANGES:
        if name in settings:
            check_intensity(name, settings[name])
