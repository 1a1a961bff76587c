"""Reading one DICOM film into a uint8 grayscale array, as a radiologist's viewer would show it.

The pipeline follows the DICOM presentation chain (PS3.3 C.11): stored values, then the modality
LUT (RescaleSlope / RescaleIntercept or a Modality LUT Sequence: values in physical units), then
the VOI LUT (a VOI LUT Sequence or WindowCenter / WindowWidth: the window the film was meant to
be read at), scaled to 0-255; MONOCHROME1 (white is the lowest value) is inverted last. A film
without a VOI LUT, or with ``dicom_window="percentile"``, is windowed to the 0.5-99.5 percentiles
of its own modality values, which ignores a few saturated pixels (labels, collimator edges).

Only single-frame grayscale films are read; anything else raises ``BadImageError`` saying what
the file is and what to do. Nothing from the header other than pixel-module tags is read, so no
patient name, ID or date ever reaches a message or a log; pydicom's own warnings (which can quote
a malformed value) are silenced while a file is read.
"""

from __future__ import annotations

import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder

from cxrnet.data.decode_options import BadImageError, DicomWindow
from cxrnet.data.records import DICOM_SUFFIXES

# The robust window for films without a VOI LUT: the 0.5 and 99.5 percentiles of the modality
# values. Wide enough to keep the lung fields' full range, narrow enough that burnt-in labels
# and the black outside the collimator do not compress the anatomy into a few grey levels.
PERCENTILE_WINDOW = (0.5, 99.5)
DICOM_EXTRA_HINT = "install the dicom extra: pip install 'cxrnet[dicom]'"
_GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
# The decoder plugins the dicom extra installs; their versions enter the cache key.
_PLUGINS = ("pydicom", "pylibjpeg", "pylibjpeg-libjpeg", "pylibjpeg-openjpeg")


def dicom_fingerprint() -> dict[str, object]:
    """What decides a DICOM film's pixels besides ``DecodeParams``: library versions, window."""
    versions: dict[str, object] = {}
    for name in _PLUGINS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**versions, "percentile_window": list(PERCENTILE_WINDOW)}


# What a file named .dcm may really be, by its first bytes: read with force, such a file gives
# a dataset without pixels, and "no PixelData element" would hide the real reason.
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "PNG", "png"),
    (b"II*\x00", "TIFF", "tiff"),
    (b"MM\x00*", "TIFF", "tiff"),
    (b"BM", "BMP", "bmp"),
    (b"GIF8", "GIF", "gif"),
)


def _not_dicom_reason(path: Path) -> str | None:
    """Why a file is no DICOM at all (empty, or another image format), from its first bytes;
    None when it may be DICOM (or cannot be read: pydicom then says why)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return None
    if not head:
        return "empty file (0 bytes): not a DICOM film; export it again or remove it"
    if head[128:132] == b"DICM":
        return None
    for magic, kind, suffix in _SIGNATURES:
        if head.startswith(magic):
            return (
                f"not a DICOM file: a {kind} image named {path.suffix}; rename it "
                f".{suffix} (cxrnet reads {kind} films as they are)"
            )
    return None


def _read_dataset(path: Path) -> pydicom.Dataset:
    if (reason := _not_dicom_reason(path)) is not None:
        raise BadImageError(path, reason)
    try:
        # force only for a .dcm name: such files sometimes lack the 128-byte preamble, while a
        # suffix-less file was recognised by that very preamble.
        return pydicom.dcmread(path, force=path.suffix.lower() in DICOM_SUFFIXES)
    except FileNotFoundError as error:
        raise BadImageError(path, "file not found") from error
    except InvalidDicomError as error:
        raise BadImageError(path, "not a DICOM file (no DICM preamble)") from error
    except MemoryError:
        raise
    except Exception as error:
        reason = f"damaged DICOM file ({type(error).__name__}: {error})"
        raise BadImageError(path, reason) from error


def _check_readable(path: Path, ds: pydicom.Dataset) -> None:
    """A ``BadImageError`` saying what the file is and the fix, unless it is one grayscale film."""
    if "PixelData" not in ds:
        other = next((k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds), None)
        what = f"only {other}, which no film has" if other else "no PixelData element"
        raise BadImageError(
            path,
            f"DICOM file holds no image ({what}; a report, a structured report or a "
            "presentation state?); list only image files",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise BadImageError(
            path,
            f"multi-frame DICOM ({frames} frames); cxrnet reads one film per file: export "
            "the frame to use as its own single-frame DICOM or PNG",
        )
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in _GRAYSCALE or samples != 1:
        raise BadImageError(
            path,
            f"colour DICOM (PhotometricInterpretation {photometric or 'missing'}, "
            f"{samples} samples per pixel); chest films are read as MONOCHROME1/MONOCHROME2: "
            "export the film as grayscale",
        )
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if syntax is None or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as error:
        raise BadImageError(
            path,
            f"DICOM compressed as {syntax.name} ({syntax}), which no decoder pydicom knows can "
            "read; export it uncompressed or as JPEG / JPEG 2000",
        ) from error
    if not decoder.is_available:
        raise BadImageError(
            path,
            f"DICOM compressed as {syntax.name} ({syntax}) and no decoder plugin for it is "
            f"installed; {DICOM_EXTRA_HINT}",
        )


def _voi(values: np.ndarray, ds: pydicom.Dataset) -> tuple[np.ndarray, float, float] | None:
    """The VOI LUT of the header applied, with the output range it maps into; None without one.

    pydicom maps a window into the range of the (rescaled) stored values and a VOI LUT Sequence
    into its entries' range; both bounds are read back through the same functions, so the scaling
    to 0-255 follows pydicom's own definition rather than a copy of it.
    """
    sequence = ds.get("VOILUTSequence")
    if sequence and sequence[0].get("LUTDescriptor") and sequence[0].get("LUTData") is not None:
        descriptor = sequence[0].LUTDescriptor
        entries, first = int(descriptor[0]) or 2**16, int(descriptor[1])
        table = apply_voi(np.arange(first, first + entries), ds)
        mapped = apply_voi(np.rint(values).astype(np.int64), ds)
        return mapped, float(table.min()), float(table.max())
    if "WindowCenter" in ds and "WindowWidth" in ds:
        with np.errstate(over="ignore"):  # SIGMOID at +-1e30: exp overflows to inf, as meant
            low, high = apply_windowing(np.array([-1e30, 1e30]), ds)
        return apply_windowing(values, ds), float(min(low, high)), float(max(low, high))
    return None


def _to_uint8(values: np.ndarray, low: float, high: float) -> np.ndarray:
    span = high - low
    if span <= 0:  # one value everywhere: black, like an empty film
        return np.zeros(values.shape, dtype=np.uint8)
    scaled = (np.asarray(values, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / span)
    return np.clip(scaled, 0, 255).round().astype(np.uint8)


def read_dicom(path: Path | str, window: DicomWindow = "auto", min_side: int = 0) -> np.ndarray:
    """The film in ``path`` as a 2-D uint8 array; ``BadImageError`` naming the fix if unreadable.

    ``window``: ``auto`` uses the header's VOI LUT or window where present and the percentile
    window otherwise; ``percentile`` always uses the percentile window.
    """
    path = Path(path)
    with warnings.catch_warnings():
        # pydicom warns about malformed header values and may quote them (a birth date, a name)
        warnings.simplefilter("ignore")
        ds = _read_dataset(path)
        _check_readable(path, ds)
        rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
        if min(rows, columns) < min_side:
            raise BadImageError(
                path,
                f"image is only {columns}x{rows} pixels; a film needs at least {min_side} "
                "pixels on each side",
            )
        try:
            stored = ds.pixel_array
            values = apply_modality_lut(stored, ds)
            voi = _voi(values, ds) if window == "auto" else None
        except MemoryError:
            raise
        except Exception as error:
            raise BadImageError(
                path, f"DICOM pixel data cannot be decoded ({type(error).__name__}: {error})"
            ) from error
    if stored.ndim != 2:
        raise BadImageError(path, f"DICOM pixel data has shape {stored.shape}, not one 2-D film")
    if voi is None:
        low, high = np.percentile(values, PERCENTILE_WINDOW)
        gray = _to_uint8(values, float(low), float(high))
    else:
        gray = _to_uint8(*voi)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        gray = 255 - gray
    return gray
