"""The choices decoding offers and the error a film that cannot be decoded raises.

Apart from ``decode`` so that the DICOM reader (``dicom``), which ``decode`` calls, can name them
without importing ``decode`` back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

ResizeMode = Literal["squash", "letterbox"]
Interpolation = Literal["area", "bilinear"]
Equalize = Literal["none", "hist", "clahe"]
EQUALIZE_MODES: tuple[Equalize, ...] = ("none", "hist", "clahe")
# DICOM films: auto (the header's VOI LUT or window where present, else the percentile window)
# | percentile (always the 0.5-99.5 percentile window; cxrnet.data.dicom).
DicomWindow = Literal["auto", "percentile"]
DICOM_WINDOWS: tuple[DicomWindow, ...] = ("auto", "percentile")


class BadImageError(ValueError):
    """A file that cannot be decoded; the message names it and says why."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"cannot decode image {path}: {reason}")
        self.path = Path(path)
        self.reason = reason
