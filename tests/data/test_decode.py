"""Decoding one file: every input kind to one 8-bit channel, bad files named, faithful resizing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers.real_films import ORIGINALS, require
from PIL import Image, ImageFile, ImageOps

from cxrnet.data.decode import BadImageError, DecodeParams, decode, fit_to_square, read_gray

ORIENTATION = 0x0112


def half_bright(width: int, height: int) -> np.ndarray:
    """Left half 230, right half 20: easy to tell which way an image came out."""
    array = np.full((height, width), 20, dtype=np.uint8)
    array[:, : width // 2] = 230
    return array


def film(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth grey picture with grain and a bright edge, JPEG-friendly like a radiograph."""
    rng = np.random.default_rng(seed)
    coarse = rng.normal(120, 45, (height // 40 + 2, width // 40 + 2)).astype(np.float32)
    picture = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    picture += rng.normal(0, 5, picture.shape).astype(np.float32)
    picture[:, width // 3 : width // 3 + 8] = 250
    return np.clip(picture, 0, 255).astype(np.uint8)


def full_decode_reference(path: Path, params: DecodeParams) -> np.ndarray:
    """Full-resolution decode (no DCT reduction), then the same resize."""
    with Image.open(path) as image:
        gray = np.asarray(ImageOps.exif_transpose(image).convert("L"))
    return fit_to_square(gray, params)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# ------------------------------------------------------------------------------- input kinds


def test_gray_jpeg_becomes_square_uint8(tmp_path: Path) -> None:
    path = tmp_path / "gray.jpeg"
    Image.fromarray(half_bright(90, 60)).save(path, quality=95)
    out = decode(path, DecodeParams(image_size=32))
    assert out.shape == (32, 32)
    assert out.dtype == np.uint8
    assert out[:, :12].mean() > 200 and out[:, -12:].mean() < 40


def _save_mode(path: Path, mode: str) -> None:
    gray = Image.fromarray(half_bright(64, 48))
    if mode == "RGB":
        Image.merge("RGB", [gray] * 3).save(path, quality=95)
    elif mode == "CMYK":
        # Ink is dark: no black ink (K=0) is white paper, full K is black.
        ink = Image.fromarray(255 - half_bright(64, 48))
        blank = Image.new("L", ink.size, 0)
        Image.merge("CMYK", [blank, blank, blank, ink]).save(path, quality=95)
    elif mode == "P":
        gray.convert("P").save(path)
    elif mode == "1":
        gray.point(lambda v: 255 if v > 128 else 0).convert("1").save(path)
    else:
        raise AssertionError(mode)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("RGB", ".jpeg"), ("CMYK", ".jpeg"), ("P", ".png"), ("1", ".png")],
)
def test_colour_and_palette_modes_become_one_gray_channel(
    tmp_path: Path, mode: str, suffix: str
) -> None:
    path = tmp_path / f"image{suffix}"
    _save_mode(path, mode)
    with Image.open(path) as image:
        assert image.mode == mode
    gray = read_gray(path)
    assert gray.shape == (48, 64) and gray.dtype == np.uint8
    assert gray[:, :24].mean() > 200 and gray[:, -24:].mean() < 40


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_become_black(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "alpha.png"
    bright = np.full((40, 40), 200, dtype=np.uint8)
    alpha = np.full((40, 40), 255, dtype=np.uint8)
    alpha[:, 20:] = 0  # right half fully transparent
    bands = [bright] * (3 if mode == "RGBA" else 1) + [alpha]
    Image.merge(mode, [Image.fromarray(b) for b in bands]).save(path)
    gray = read_gray(path)
    assert gray.shape == (40, 40)
    assert gray[:, :20].min() == 200
    assert gray[:, 20:].max() == 0


def test_sixteen_bit_png_uses_the_whole_8_bit_range(tmp_path: Path) -> None:
    # 12-bit data in a 16-bit PNG, as many radiographs are stored: dividing by 257 would leave
    # it nearly black, clipping at 255 would leave it nearly white.
    path = tmp_path / "twelve_bit.png"
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (16, 1))
    Image.fromarray(ramp).save(path)
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    gray = read_gray(path)
    assert gray.dtype == np.uint8
    assert gray.min() == 0 and gray.max() == 255
    assert np.all(np.diff(gray[0].astype(int)) >= 0)  # still a ramp, not clipped flat


def _save_rotated_jpeg(path: Path, stored: np.ndarray, orientation: int) -> None:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # Orientation 6: the stored pixels must turn 90 degrees clockwise to stand upright, so the
    # stored left half (bright) becomes the top half.
    path = tmp_path / "rotated.jpeg"
    _save_rotated_jpeg(path, half_bright(80, 40), orientation=6)
    gray = read_gray(path)
    assert gray.shape == (80, 40)
    assert gray[:30].mean() > 200 and gray[-30:].mean() < 40


def test_exif_orientation_kept_with_dct_reduction_and_letterbox(tmp_path: Path) -> None:
    # Stored 1200 x 600, upright 600 wide x 1200 high: a letterbox puts black columns left and
    # right, never rows at the top and bottom.
    path = tmp_path / "rotated_big.jpeg"
    _save_rotated_jpeg(path, half_bright(1200, 600), orientation=6)
    assert read_gray(path, target=100).shape[0] < 1200  # decoded reduced, still upright
    out = decode(path, DecodeParams(image_size=100, resize="letterbox"))
    assert out[:, :20].max() == 0 and out[:, -20:].max() == 0
    assert out[:40, 30:70].mean() > 200 and out[-40:, 30:70].mean() < 40


# ----------------------------------------------------------------------------------- bad files


def _truncated_jpeg(tmp_path: Path) -> Path:
    whole = tmp_path / "whole.jpeg"
    Image.fromarray(film(400, 300)).save(whole, quality=90)
    cut = tmp_path / "cut.jpeg"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    return cut


def test_truncated_jpeg_is_an_error_naming_the_file(tmp_path: Path) -> None:
    cut = _truncated_jpeg(tmp_path)
    with pytest.raises(BadImageError, match="truncated") as caught:
        decode(cut, DecodeParams(image_size=64))
    assert str(cut) in str(caught.value)
    assert caught.value.path == cut


def test_truncation_detected_even_when_pil_is_told_to_tolerate_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cut = _truncated_jpeg(tmp_path)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImageError, match="truncated"):
        read_gray(cut, target=64)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def test_every_byte_cut_from_the_end_is_detected(tmp_path: Path) -> None:
    whole = tmp_path / "whole.jpeg"
    Image.fromarray(film(200, 160)).save(whole, quality=90)
    data = whole.read_bytes()
    for missing in (1, 2, 5, 100):
        cut = tmp_path / f"cut{missing}.jpeg"
        cut.write_bytes(data[:-missing])
        with pytest.raises(BadImageError):
            read_gray(cut)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"this is not a picture at all" * 10, "not an image"),
        (None, "file not found"),
    ],
)
def test_unreadable_files_say_why(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "bad.jpeg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(BadImageError, match=reason) as caught:
        decode(path, DecodeParams())
    assert caught.value.reason.startswith(reason)
    assert str(path) in str(caught.value)


def test_truncated_png_is_an_error(tmp_path: Path) -> None:
    whole = tmp_path / "whole.png"
    Image.fromarray(film(120, 90)).save(whole)
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole.read_bytes()[:-300])
    with pytest.raises(BadImageError):
        read_gray(cut)


# ----------------------------------------------------------------------------- resize options


def test_letterbox_keeps_the_aspect_ratio_with_black_bars() -> None:
    wide = np.full((50, 100), 180, dtype=np.uint8)
    out = fit_to_square(wide, DecodeParams(image_size=40, resize="letterbox"))
    assert out.shape == (40, 40)
    assert out[:10].max() == 0 and out[-10:].max() == 0  # bars above and below
    assert out[10:30].min() == 180


def test_squash_fills_the_square() -> None:
    wide = np.full((50, 100), 180, dtype=np.uint8)
    assert fit_to_square(wide, DecodeParams(image_size=40)).min() == 180


def test_equalize_spreads_a_low_contrast_film() -> None:
    dull = np.tile(np.linspace(100, 130, 64).astype(np.uint8), (64, 1))
    plain = fit_to_square(dull, DecodeParams(image_size=32))
    equalized = fit_to_square(dull, DecodeParams(image_size=32, equalize=True))
    assert int(plain.max()) - int(plain.min()) <= 31
    assert int(equalized.max()) - int(equalized.min()) > 200


def test_wide_low_film_is_resized_on_both_axes() -> None:
    # Width shrinks while height grows: both filters apply and the size is exact.
    low = np.tile(np.arange(300, dtype=np.uint8)[None, :] % 2 * 255, (40, 1))
    out = fit_to_square(low, DecodeParams(image_size=60))
    assert out.shape == (60, 60)
    assert abs(float(out.mean()) - 127.5) < 3  # fine stripes averaged, not aliased


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 4}, "image_size must be at least 8, got 4"),
        ({"resize": "crop"}, "resize must be 'squash' or 'letterbox', got 'crop'"),
        ({"interpolation": "cubic"}, "interpolation must be 'area' or 'bilinear'"),
    ],
)
def test_bad_parameters_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DecodeParams(**kwargs)


# ------------------------------------------------------------------------------- faithfulness


def test_large_jpeg_is_decoded_reduced_and_stays_faithful(tmp_path: Path) -> None:
    path = tmp_path / "large.jpeg"
    Image.fromarray(film(2100, 1700)).save(path, quality=92)
    reduced = read_gray(path, target=150)
    assert reduced.shape[0] <= 1700 // 2  # never decoded at full size
    for params in (DecodeParams(150), DecodeParams(150, resize="letterbox"), DecodeParams(64)):
        difference = mean_abs_diff(decode(path, params), full_decode_reference(path, params))
        assert difference <= 1.0, (params, difference)


def _originals() -> list[Path]:
    return sorted(require(ORIGINALS).rglob("*.jpeg"))


def _size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.mark.real_data
@pytest.mark.parametrize(
    "params",
    [DecodeParams(150), DecodeParams(224), DecodeParams(150, resize="letterbox")],
    ids=["150-squash", "224-squash", "150-letterbox"],
)
def test_real_originals_within_one_grey_level_of_a_full_decode(params: DecodeParams) -> None:
    originals = _originals()
    worst = 0.0
    for path in originals:
        with Image.open(path) as image:
            full = np.asarray(ImageOps.exif_transpose(image).convert("L"))
        reference = fit_to_square(full, params)
        if params.resize == "squash" and min(full.shape) >= params.image_size:
            # For films that shrink on both axes the reference is plain OpenCV area resizing.
            area = cv2.resize(full, (params.image_size,) * 2, interpolation=cv2.INTER_AREA)
            assert np.array_equal(reference, area)
        worst = max(worst, mean_abs_diff(decode(path, params), reference))
    assert worst <= 1.0


@pytest.mark.real_data
def test_real_originals_are_never_fully_decoded_for_a_small_target() -> None:
    big = [p for p in _originals() if min(_size(p)) >= 600]
    assert big
    for path in big:
        width, height = _size(path)
        rows, cols = read_gray(path, target=150).shape
        assert rows <= -(-height // 2) and cols <= -(-width // 2)  # at most half each way
