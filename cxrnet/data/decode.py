"""Reading one image file into a square uint8 grayscale array of the training size.

Decoding is the slow part of building the image cache, so JPEGs are reduced in the DCT domain
(libjpeg's 1/2, 1/4, 1/8 scaled decoding via PIL ``draft``) before an area resize. The reduction
stops while the decoded image is still ``DCT_HEADROOM`` times the target, which keeps the result
within 1 grey level (mean absolute difference) of a full decode followed by the same resize.
DICOM files (``.dcm``, or any name carrying the DICOM preamble) are windowed to 8 bits by
``cxrnet.data.dicom`` and then resized like any other film.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import PIL
from PIL import Image, ImageFile, ImageOps

from cxrnet.data.decode_options import (
    DICOM_WINDOWS,
    EQUALIZE_MODES,
    BadImageError,
    DicomWindow,
    Equalize,
    Interpolation,
    ResizeMode,
)
from cxrnet.data.records import PIL_SUFFIXES, is_dicom

# Named here too: the decoding options and the decoding error are decode's vocabulary.
__all__ = [
    "DICOM_WINDOWS",
    "EQUALIZE_MODES",
    "BadImageError",
    "DecodeParams",
    "DicomWindow",
    "Equalize",
    "Interpolation",
    "ResizeMode",
    "decode",
    "decoder_fingerprint",
    "fit_to_square",
    "read_gray",
]

# CLAHE as usually applied to chest films: contrast limited at 2, 8x8 tiles at any size.
CLAHE_CLIP_LIMIT = 2.0
CLAHE_TILES = 8

# How far the DCT-domain reduction may go: the decoded short side stays >= this x the target.
# The scaled IDCT is not a box filter, so less headroom drifts from a full decode. Worst mean
# absolute difference per image on the 41 originals (sizes 64/150/224, squash and letterbox,
# resized over the exact extent): 1.0 -> 1.37 grey levels, 1.25 or 1.5 -> 0.78, 2.0 -> 0.59,
# 2.5 -> 0.39. 1.5 would decode ~11% faster than 2.0 (Huffman decoding, which no reduction
# skips, dominates); 2.0 keeps a margin under the 1-level limit for films not yet seen.
# Part of the cache key (experiments/benchmarks/bench_data.py --sweep-headroom measures it).
DCT_HEADROOM = 2.0
# The smallest side a film may have, in pixels. Below it there is no picture left to learn from
# (a 1x1 thumbnail, a placeholder from a failed export); stretched to the training size it
# would pass as a film, so it is reported like a corrupt file.
MIN_IMAGE_SIDE = 32

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA"})


@dataclass(frozen=True)
class DecodeParams:
    """Everything that changes the decoded pixels; part of the cache key."""

    image_size: int = 150
    resize: ResizeMode = "squash"
    # none | hist (global histogram equalization) | clahe; true/false are read as hist/none.
    equalize: Equalize | bool = "none"
    interpolation: Interpolation = "area"
    dicom_window: DicomWindow = "auto"

    def __post_init__(self) -> None:
        if isinstance(self.equalize, bool):
            # frozen: the one normalisation happens here, so equal settings give equal keys
            object.__setattr__(self, "equalize", "hist" if self.equalize else "none")
        if self.equalize not in EQUALIZE_MODES:
            raise ValueError(
                f"equalize must be one of {', '.join(EQUALIZE_MODES)} (or true/false), "
                f"got {self.equalize!r}"
            )
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int):
            raise ValueError(f"image_size must be an integer, got {self.image_size!r}")
        if self.image_size < 8:
            raise ValueError(f"image_size must be at least 8, got {self.image_size}")
        if self.resize not in ("squash", "letterbox"):
            raise ValueError(f"resize must be 'squash' or 'letterbox', got {self.resize!r}")
        if self.interpolation not in ("area", "bilinear"):
            raise ValueError(
                f"interpolation must be 'area' or 'bilinear', got {self.interpolation!r}"
            )
        if self.dicom_window not in DICOM_WINDOWS:
            raise ValueError(
                f"dicom_window must be one of {', '.join(DICOM_WINDOWS)}, got {self.dicom_window!r}"
            )

    def as_dict(self) -> dict[str, object]:
        # Settings added later are written only when not at their default, so the cache keys,
        # checkpoints and exports of earlier versions stay identical (and load: the default
        # fills in).
        return {
            name: value
            for name, value in asdict(self).items()
            if name not in _ADDED_LATER or value != _ADDED_LATER[name]
        }


_ADDED_LATER: dict[str, object] = {"dicom_window": "auto"}


def decoder_fingerprint(paths: Iterable[Path | str] = ()) -> dict[str, object]:
    """What, besides ``DecodeParams``, decides the pixels: library versions and the reduction.

    With ``paths`` that include a DICOM name (``.dcm`` or no image suffix), the DICOM stack's
    versions too; a set of JPEGs and PNGs keeps the key it had before DICOM was read.
    """
    found = {
        "pillow": PIL.__version__,
        "opencv": cv2.__version__,
        "dct_headroom": DCT_HEADROOM,
        "min_side": MIN_IMAGE_SIDE,
    }
    # On strings, one C call each: a Path (or splitext) per file cost a warm start of 377,000
    # films seconds. (A name that is only a suffix, ".png", is a hidden file, never a film.)
    pil = tuple(PIL_SUFFIXES)
    if any(not path.lower().endswith(pil) for path in map(str, paths)):
        from cxrnet.data.dicom import dicom_fingerprint  # pydicom is imported only when needed

        found["dicom"] = dicom_fingerprint()
    return found


def _load_strictly(image: Image.Image) -> None:
    # With LOAD_TRUNCATED_IMAGES (which some libraries switch on globally) PIL pads a cut-off
    # file with grey and says nothing; a cache would then keep that image forever.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        image.load()
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def _to_gray_uint8(image: Image.Image) -> np.ndarray:
    if image.mode in _SIXTEEN_BIT_MODES:
        # 16-bit films often hold 10-12 bit data: scale the image's own range down rather than
        # clipping at 255 or dividing by 257 (which would leave a 12-bit film nearly black).
        array = np.asarray(image).astype(np.float32)
        high = float(array.max()) if array.size else 0.0
        scale = 255.0 / high if high > 255 else 1.0
        return np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if image.mode in _ALPHA_MODES or (image.mode == "P" and "transparency" in image.info):
        # Composite transparency over black: an X-ray's background is dark.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, image)
    if image.mode != "L":
        image = image.convert("L")
    return np.asarray(image, dtype=np.uint8)


# (width, height) in array pixels that the picture spans; a reduced decode's last row and
# column cover only part of an original block, so it can be fractional and a little smaller
# than the array. Resizing by it keeps the geometry of a full decode exactly.
Extent = tuple[float, float]


def _read_gray_extent(
    path: Path, target: int | None, min_side: int = 0, dicom_window: DicomWindow = "auto"
) -> tuple[np.ndarray, Extent]:
    if is_dicom(path):
        from cxrnet.data.dicom import read_dicom  # pydicom is imported only when needed

        array = read_dicom(path, dicom_window, min_side)
        return array, (float(array.shape[1]), float(array.shape[0]))
    try:
        with Image.open(path) as image:
            extent = (float(image.width), float(image.height))
            if min(image.size) < min_side:
                raise BadImageError(
                    path,
                    f"image is only {image.width}x{image.height} pixels; a film needs at least "
                    f"{min_side} pixels on each side",
                )
            if target is not None and image.format == "JPEG":
                side = math.ceil(DCT_HEADROOM * target)
                # "L" makes libjpeg emit luma directly for colour JPEGs, skipping chroma work.
                drafted = image.draft("L", (side, side))
                if drafted is not None:
                    extent = (drafted[1][2], drafted[1][3])  # box: full size / DCT scale
            _load_strictly(image)
            decoded_size = image.size
            ImageOps.exif_transpose(image, in_place=True)
            if image.size != decoded_size:
                extent = (extent[1], extent[0])
            return _to_gray_uint8(image), extent
    except BadImageError:
        raise
    except FileNotFoundError as error:
        raise BadImageError(path, "file not found") from error
    except Image.UnidentifiedImageError as error:
        empty = path.is_file() and path.stat().st_size == 0
        reason = "empty file (0 bytes)" if empty else "not an image format PIL can read"
        raise BadImageError(path, reason) from error
    except MemoryError:
        raise
    except Exception as error:
        # PIL's plugins raise many types on damaged files (OSError, SyntaxError, struct.error,
        # IndexError, DecompressionBombError...); each is a reason to report, not a crash.
        raise BadImageError(path, f"{type(error).__name__}: {error}") from error


def read_gray(
    path: Path | str, target: int | None = None, dicom_window: DicomWindow = "auto"
) -> np.ndarray:
    """Decode ``path`` to one uint8 channel, EXIF orientation applied (DICOM: windowed).

    With ``target``, JPEGs are decoded at a reduced DCT scale whose short side stays at least
    ``DCT_HEADROOM * target``, so a 2,000-pixel film is never fully decoded for a 150-pixel input.
    Raises ``BadImageError`` for a missing, empty, truncated or unreadable file.
    """
    return _read_gray_extent(Path(path), target, dicom_window=dicom_window)[0]


def _scale(array: np.ndarray, fx: float, fy: float, flag: int) -> np.ndarray:
    # dsize=None makes OpenCV use fx and fy as given instead of re-deriving them from rounded
    # sizes; the output is then at least as large as wanted and the caller crops it.
    return cv2.resize(array, None, fx=fx, fy=fy, interpolation=flag)


def _resize(
    array: np.ndarray, width: int, height: int, interpolation: str, extent: Extent
) -> np.ndarray:
    fx, fy = width / extent[0], height / extent[1]
    if interpolation == "bilinear" or (fx >= 1 and fy >= 1):
        out = _scale(array, fx, fy, cv2.INTER_LINEAR)
    elif fx <= 1 and fy <= 1:
        out = _scale(array, fx, fy, cv2.INTER_AREA)
    else:
        # One axis shrinks and the other grows (a wide, low film): OpenCV's INTER_AREA would
        # point-sample the shrinking axis and INTER_LINEAR alias it, so give each axis its filter.
        out = _scale(array, min(fx, 1.0), min(fy, 1.0), cv2.INTER_AREA)
        out = _scale(out, max(fx, 1.0), max(fy, 1.0), cv2.INTER_LINEAR)
    return out[:height, :width]


def fit_to_square(
    array: np.ndarray, params: DecodeParams, extent: Extent | None = None
) -> np.ndarray:
    """Resize to ``params.image_size`` square (squash, or letterbox padded with black).

    ``extent`` is the (width, height) in pixels of ``array`` that the picture spans, when that
    is less than the whole array (a DCT-reduced decode); by default the whole array.
    """
    size = params.image_size
    extent = extent or (float(array.shape[1]), float(array.shape[0]))
    if params.resize == "squash":
        out = _resize(array, size, size, params.interpolation, extent)
    else:
        scale = size / max(extent)
        new_w = min(size, max(1, round(extent[0] * scale)))
        new_h = min(size, max(1, round(extent[1] * scale)))
        resized = _resize(array, new_w, new_h, params.interpolation, extent)
        out = np.zeros((size, size), dtype=np.uint8)
        top = (size - new_h) // 2
        left = (size - new_w) // 2
        out[top : top + new_h, left : left + new_w] = resized
    if params.equalize == "hist":
        out = cv2.equalizeHist(out)
    elif params.equalize == "clahe":
        clahe = cv2.createCLAHE(clipLimit=CLAHE_CLIP_LIMIT, tileGridSize=(CLAHE_TILES,) * 2)
        out = clahe.apply(out)
    return np.ascontiguousarray(out, dtype=np.uint8)


def decode(path: Path | str, params: DecodeParams) -> np.ndarray:
    """One file to a ``(image_size, image_size)`` uint8 array; ``BadImageError`` if unreadable
    or smaller than ``MIN_IMAGE_SIDE`` on a side."""
    array, extent = _read_gray_extent(
        Path(path), params.image_size, MIN_IMAGE_SIDE, params.dicom_window
    )
    return fit_to_square(array, params, extent)
