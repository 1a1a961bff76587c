"""DICOM films: the pixel pipeline (modality LUT, VOI LUT or window, percentile window,
MONOCHROME1), bit depths and signedness, compressed syntaxes, bad files with clear errors, and
DICOM wherever images are read (discovery, predict's listing, the cache, training). Files are
written here with pydicom; the real ones in ../shared/data/dicom are read where present."""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers.console import run_script
from helpers.datamodule import make_dm
from helpers.dicom_films import BIRTH_DATE, PATIENT_NAME, write_dicom
from helpers.real_films import SHARED_DATA, require
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder, get_encoder
from pydicom.uid import (
    MPEG4HP41,
    UID,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)

from cxrnet.data.cache import load_images
from cxrnet.data.cache_entry import cache_key
from cxrnet.data.decode import BadImageError, DecodeParams, decode, decoder_fingerprint, read_gray
from cxrnet.data.discovery import scan_folder
from cxrnet.data.records import is_dicom, make_record, patient_from_name
from cxrnet.inference.inputs import list_inputs

REAL_DICOM = SHARED_DATA / "dicom"


def two_values(low: int, high: int, dtype: str, mid: int | None = None) -> np.ndarray:
    """64x64: the left half ``low``, the right half ``high``, one pixel ``mid`` (1 of 4096: it
    lies between the 0.5 and 99.5 percentiles, which are then exactly ``low`` and ``high``)."""
    pixels = np.full((64, 64), low, dtype=dtype)
    pixels[:, 32:] = high
    if mid is not None:
        pixels[0, 0] = mid
    return pixels


def gray(path: Path, window: str = "auto") -> np.ndarray:
    return read_gray(path, dicom_window=window)


# ------------------------------------------------------------------- the pixel pipeline


def test_a_window_from_the_header_maps_below_to_black_above_to_white(tmp_path: Path) -> None:
    pixels = two_values(0, 1000, "uint16", mid=500)
    path = write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=500, WindowWidth=1000)
    out = gray(path)
    assert out.dtype == np.uint8 and out.shape == (64, 64)
    assert out[1, 0] == 0 and out[1, 40] == 255
    # LINEAR (PS3.3 C.11.2.1.2): ((500 - 499.5) / 999 + 0.5) of the range = 0.5005 -> 127.6
    assert out[0, 0] == 128


def test_the_rescale_is_applied_before_the_window(tmp_path: Path) -> None:
    # stored 0 / 50 / 100, slope 2, intercept -100: -100 / 0 / 100 in modality units; the window
    # 0 +- 50 shows 0 as mid-grey. Without the rescale, stored 50 would lie above it (white).
    pixels = two_values(0, 100, "uint16", mid=50)
    path = write_dicom(
        tmp_path / "r.dcm",
        pixels,
        RescaleSlope=2,
        RescaleIntercept=-100,
        WindowCenter=0,
        WindowWidth=101,
    )
    out = gray(path)
    assert out[1, 0] == 0 and out[1, 40] == 255
    assert out[0, 0] == 129  # ((0 + 0.5) / 100 + 0.5) * 255 = 128.8


def test_a_voi_lut_sequence_is_applied_in_preference_to_the_window(tmp_path: Path) -> None:
    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    lut = Dataset()
    lut.LUTDescriptor = [256, 0, 8]
    lut.add_new(0x00283006, "US", list(range(255, -1, -1)))  # LUTData: v -> 255 - v
    path = write_dicom(
        tmp_path / "lut.dcm", pixels, VOILUTSequence=[lut], WindowCenter=10, WindowWidth=4
    )
    assert np.array_equal(gray(path), 255 - pixels)


def test_without_a_window_the_percentile_window_is_used(tmp_path: Path) -> None:
    ramp = np.arange(10_000, dtype=np.uint16).reshape(100, 100)
    out = gray(write_dicom(tmp_path / "ramp.dcm", ramp))
    # 0.5 and 99.5 percentiles of 0..9999 (linear): 49.995 and 9949.005
    assert out.flat[0] == 0 and out.flat[49] == 0 and out.flat[9999] == 255
    assert out.flat[4999] == 127  # (4999 - 49.995) / 9899.01 * 255 = 127.49
    assert out.flat[50] == 0 and out.flat[100] == 1  # (100 - 49.995) / 9899.01 * 255 = 1.29


def test_percentile_windowing_ignores_the_header_window(tmp_path: Path) -> None:
    pixels = two_values(0, 1000, "uint16", mid=250)
    path = write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=500, WindowWidth=100)
    assert gray(path)[0, 0] == 0  # the header's narrow window: 250 is below it
    assert gray(path, "percentile")[0, 0] == 64  # 250 / 1000 * 255 = 63.75


def test_monochrome1_is_the_inverse_of_monochrome2(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(48, 40), dtype=np.uint16)
    mono2 = gray(write_dicom(tmp_path / "m2.dcm", pixels, bits_stored=12))
    mono1 = gray(
        write_dicom(tmp_path / "m1.dcm", pixels, bits_stored=12, photometric="MONOCHROME1")
    )
    assert mono2.std() > 50
    assert np.array_equal(mono1.astype(int), 255 - mono2.astype(int))


@pytest.mark.parametrize(
    ("dtype", "bits", "low", "high", "mid", "expected"),
    [
        ("uint16", 10, 0, 1023, 256, 64),  # 256 / 1023 * 255 = 63.8
        ("uint16", 12, 0, 4095, 1000, 62),  # 1000 / 4095 * 255 = 62.3
        ("uint16", 16, 0, 65535, 40000, 156),  # 155.6
        ("int16", 12, -2048, 2047, 0, 128),  # 2048 / 4095 * 255 = 127.5
        ("int16", 16, -32768, 32767, -16384, 64),  # 16384 / 65535 * 255 = 63.75
        ("uint8", 8, 10, 200, 105, 128),  # 95 / 190 * 255 = 127.5
    ],
)
def test_bit_depths_signed_and_unsigned(
    tmp_path: Path, dtype: str, bits: int, low: int, high: int, mid: int, expected: int
) -> None:
    pixels = two_values(low, high, dtype, mid=mid)
    out = gray(write_dicom(tmp_path / "b.dcm", pixels, bits_stored=bits))
    assert out[1, 0] == 0 and out[1, 40] == 255 and out[0, 0] == expected


def test_thirteen_bits_stored_in_sixteen_are_sign_extended(tmp_path: Path) -> None:
    # Two's complement in 13 bits with the 3 unused high bits zero, as a scanner may write them:
    # -1000 stored as 0x1C18 must read as -1000, not 7192.
    values = two_values(-4096, 4095, "int16", mid=-1000)
    stored = (values.astype(np.int32) & 0x1FFF).astype(np.uint16).view(np.int16)
    out = gray(write_dicom(tmp_path / "13.dcm", stored, bits_stored=13))
    assert out[1, 0] == 0 and out[1, 40] == 255
    assert out[0, 0] == 96  # 3096 / 8191 * 255 = 96.4


def test_a_dcm_without_the_preamble_is_read(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "bare.dcm", two_values(0, 9, "uint16"), preamble=False)
    assert not is_dicom(tmp_path / "bare") and is_dicom(path)
    assert set(np.unique(gray(path))) == {0, 255}


def test_a_film_goes_through_the_same_resize_as_a_jpeg(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    film = rng.integers(0, 256, size=(300, 200), dtype=np.uint8)
    film[:, :2] = 0
    film[:, -2:] = 255  # the percentile window is then exactly 0..255: the pixels stay as they are
    dcm = write_dicom(tmp_path / "f.dcm", film)
    png = tmp_path / "f.png"
    Image.fromarray(film).save(png)
    for params in (DecodeParams(image_size=64), DecodeParams(image_size=64, resize="letterbox")):
        assert np.array_equal(decode(dcm, params), decode(png, params))


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless], ids=["rle", "jpeg2000"])
def test_compressed_films_decode_like_uncompressed_ones(tmp_path: Path, syntax: UID) -> None:
    if not get_encoder(syntax).is_available:
        pytest.skip(f"no encoder for {syntax.name} installed (the dicom extra has one)")
    rng = np.random.default_rng(2)
    pixels = rng.integers(-2000, 2000, size=(64, 48), dtype=np.int16)
    plain = gray(write_dicom(tmp_path / "plain.dcm", pixels, bits_stored=12))
    packed = write_dicom(tmp_path / "packed.dcm", pixels, bits_stored=12, syntax=syntax)
    assert np.array_equal(gray(packed), plain)


# ------------------------------------------------------------------------------ bad files


def _bad(path: Path, *needles: str) -> str:
    with pytest.raises(BadImageError) as caught:
        decode(path, DecodeParams(image_size=32))
    message = str(caught.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message, message
    return message


def test_a_multi_frame_file_is_a_bad_image_saying_what_to_do(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "cine.dcm", np.zeros((2, 40, 40), dtype=np.uint16))
    _bad(path, "multi-frame DICOM (2 frames)", "export the frame")


def test_a_colour_file_is_a_bad_image_saying_what_to_do(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "rgb.dcm", np.zeros((40, 40, 3), np.uint8), photometric="RGB")
    _bad(path, "colour DICOM (PhotometricInterpretation RGB", "export the film as grayscale")


def test_a_file_without_pixel_data_is_a_bad_image(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "sr.dcm", np.zeros((40, 40), np.uint16))
    from pydicom import dcmread

    ds = dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    _bad(path, "holds no image", "no PixelData element")


def test_a_transfer_syntax_no_decoder_reads_is_a_bad_image(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "x.dcm", np.zeros((40, 40), np.uint16))
    from pydicom import dcmread

    ds = dcmread(path)
    ds.file_meta.TransferSyntaxUID = MPEG4HP41  # video: pydicom has no decoder for it
    ds.PixelData = encapsulate([bytes(32)])
    ds.save_as(path)
    _bad(path, f"MPEG-4 AVC/H.264 High Profile / Level 4.1 ({MPEG4HP41})", "export it uncompressed")


def test_a_compressed_file_without_its_plugin_names_the_dicom_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_dicom(tmp_path / "rle.dcm", two_values(0, 9, "uint16"), syntax=RLELossless)
    decoder = get_decoder(RLELossless)
    monkeypatch.setattr(type(decoder), "is_available", property(lambda self: False))
    _bad(path, "RLE Lossless", "pip install 'cxrnet[dicom]'")


def test_skip_mode_lists_bad_dicom_files_like_any_bad_file(tmp_path: Path) -> None:
    good = write_dicom(tmp_path / "good.dcm", two_values(0, 9, "uint16"))
    cine = write_dicom(tmp_path / "cine.dcm", np.zeros((2, 40, 40), dtype=np.uint16))
    rgb = write_dicom(tmp_path / "rgb.dcm", np.zeros((40, 40, 3), np.uint8), photometric="RGB")
    records = [make_record(path, 0, "train") for path in (good, cine, rgb)]
    loaded = load_images(records, DecodeParams(image_size=32), cache_dir=None, on_bad_image="skip")
    assert [r.path for r in loaded.records] == [good]
    reasons = {record.path: reason for record, reason in loaded.skipped}
    assert reasons[cine].startswith("multi-frame DICOM") and reasons[rgb].startswith("colour")


def test_nothing_identifying_reaches_logs_warnings_or_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns (and logs) as it writes the bad age
        malformed = write_dicom(tmp_path / "m.dcm", two_values(0, 9, "uint16"), PatientAge="?")
    bad = write_dicom(tmp_path / "cine.dcm", np.zeros((2, 40, 40), dtype=np.uint16))
    caplog.set_level(logging.DEBUG)
    caplog.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gray(malformed)
        with pytest.raises(BadImageError) as error:
            gray(bad)
        load_images(
            [make_record(p, 0, "train") for p in (malformed, bad)],
            DecodeParams(image_size=32),
            cache_dir=tmp_path / "cache",
            on_bad_image="skip",
            progress=False,
        )
    said = caplog.text + str(error.value) + " ".join(str(w.message) for w in caught)
    said += " ".join(p.read_text() for p in (tmp_path / "cache").rglob("*.csv"))
    said += " ".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    for secret in ("Doe", "Jane", BIRTH_DATE, "1970", "'?'"):
        assert secret not in said


# ---------------------------------------------------------- wherever images are read


def test_cache_keys_of_jpeg_sets_are_unchanged_and_dicom_sets_cover_the_window(
    tmp_path: Path,
) -> None:
    assert DecodeParams().as_dict() == {
        "image_size": 150,
        "resize": "squash",
        "equalize": "none",
        "interpolation": "area",
    }  # as before DICOM: earlier caches, checkpoints and exports keep their keys and load
    assert DecodeParams(dicom_window="percentile").as_dict()["dicom_window"] == "percentile"
    assert decoder_fingerprint(["a.jpeg", "b.png"]) == decoder_fingerprint()
    assert "pydicom" in decoder_fingerprint(["a.jpeg", "b.dcm"])["dicom"]
    record = make_record(write_dicom(tmp_path / "a.dcm", two_values(0, 9, "uint16")), 0, "train")
    auto, percentile = (cache_key([record], DecodeParams(dicom_window=w)) for w in DICOM_MODES)
    assert auto != percentile
    with pytest.raises(ValueError, match="dicom_window must be one of auto, percentile"):
        DecodeParams(dicom_window="minmax")  # type: ignore[arg-type]


DICOM_MODES = ("auto", "percentile")


def _dicom_folder(root: Path) -> dict[str, Path]:
    films = {
        "dcm": write_dicom(root / "a.dcm", two_values(0, 9, "uint16")),
        "upper": write_dicom(root / "B.DCM", two_values(0, 9, "uint16")),
        "bare": write_dicom(root / "c", two_values(0, 9, "uint16")),
        "uid": write_dicom(root / "1.2.840.113619.2.55.3.1234", two_values(0, 9, "uint16")),
    }
    (root / "notes").write_text("not a film\n" * 20)
    (root / "empty").write_bytes(b"")
    return films


def test_discovery_finds_dicom_by_suffix_or_by_preamble(tmp_path: Path) -> None:
    films = _dicom_folder(tmp_path)
    images, ignored = scan_folder(tmp_path)
    assert sorted(images) == sorted(films.values())
    assert sorted(path.name for path, _ in ignored) == ["empty", "notes"]
    assert "DICOM files without a suffix" in dict(ignored)[tmp_path / "notes"]


def test_predict_lists_dicom_in_folders_and_as_single_files(tmp_path: Path) -> None:
    films = _dicom_folder(tmp_path)
    assert list_inputs(tmp_path) == sorted(films.values())
    assert list_inputs(films["bare"]) == [films["bare"]]


def _as_dicom(folder: Path) -> None:
    """Every JPEG under ``folder`` replaced by a 12-bit DICOM film of the same pixels (values x16
    under a rescale back to 0..255 and a window over it); every third without a suffix. Each
    keeps its patient as its PatientID (the header's patient replaces the name's)."""
    for number, jpeg in enumerate(sorted(folder.rglob("*.jpeg"))):
        pixels = np.asarray(Image.open(jpeg).convert("L"), dtype=np.uint16) * 16
        target = jpeg.with_suffix("") if number % 3 == 0 else jpeg.with_suffix(".dcm")
        write_dicom(
            target,
            pixels,
            bits_stored=12,
            RescaleSlope=1 / 16,
            RescaleIntercept=0,
            WindowCenter=128,
            WindowWidth=256,
            PatientID=patient_from_name(jpeg.name),
        )
        jpeg.unlink()


def test_a_dicom_data_set_loads_through_discovery_and_the_cache(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    _as_dicom(synthetic_copy)
    dm = make_dm(synthetic_copy, cache_dir=tmp_path / "cache")
    dm.setup("fit")
    paths = [record.path for record in dm.split_records["train"]]
    assert paths and {p.suffix for p in paths} <= {".dcm", ""}
    assert any(p.suffix == "" for p in paths)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[-2:] == (32, 32) and float(images.std()) > 0


@pytest.mark.slow
def test_cxrnet_train_trains_on_a_folder_of_dicom_films(
    synthetic_copy: Path, tmp_path: Path
) -> None:
    _as_dicom(synthetic_copy)
    done = run_script(
        "cxrnet-train",
        ["debug=fast", f"data.root={synthetic_copy}", f"paths.log_dir={tmp_path / 'logs'}"],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert list((tmp_path / "logs").glob("*/runs/*/checkpoints/*.ckpt"))
    split = next((tmp_path / "logs").glob("*/runs/*/split.csv")).read_text()
    assert ".dcm" in split and PATIENT_NAME not in split


# ---------------------------------------------------------------------- the real files


def real(name: str) -> Path:
    return require(REAL_DICOM) / name


REAL_FILES = [
    "siim_cr_chest_mono2_8bit_jpeg.dcm",
    "siim_cr_chest_mono1_8bit_jpeg.dcm",
    "nih_dx_chest_nofinding_8bit_raw.dcm",
    "ct_orbit_16bit_signed_raw.dcm",
    "ct_13bitstored_signed_raw.dcm",
    "ct_16bit_jpeg_lossless.dcm",
]


def _needs_plugin(path: Path) -> None:
    from pydicom import dcmread

    syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
    if syntax == JPEGLosslessSV1 and not get_decoder(syntax).is_available:
        pytest.skip("JPEG lossless needs pylibjpeg-libjpeg (the dicom extra), not installed")


@pytest.mark.real_data
@pytest.mark.parametrize("name", REAL_FILES)
@pytest.mark.parametrize("size", [64, 224])
def test_each_real_file_decodes_to_the_asked_square(name: str, size: int) -> None:
    path = real(name)
    _needs_plugin(path)
    out = decode(path, DecodeParams(image_size=size))
    assert out.shape == (size, size) and out.dtype == np.uint8
    assert out.min() < 30 and out.max() > 225  # windowed to the full range, not a flat film


@pytest.mark.real_data
def test_the_real_monochrome1_film_is_the_inverse_of_its_monochrome2_twin() -> None:
    mono2 = gray(real("siim_cr_chest_mono2_8bit_jpeg.dcm")).astype(int)
    mono1 = gray(real("siim_cr_chest_mono1_8bit_jpeg.dcm")).astype(int)
    assert mono2.shape == (1024, 1024)
    assert np.abs(mono1 + mono2 - 255).max() <= 1


@pytest.mark.real_data
def test_the_real_jpeg_lossless_film_equals_the_uncompressed_slice() -> None:
    path = real("ct_16bit_jpeg_lossless.dcm")
    _needs_plugin(path)
    assert np.array_equal(gray(path), gray(real("ct_orbit_16bit_signed_raw.dcm")))


@pytest.mark.real_data
def test_a_real_film_without_its_suffix_is_still_read(tmp_path: Path) -> None:
    source = real("nih_dx_chest_nofinding_8bit_raw.dcm")
    bare = Path(shutil.copyfile(source, tmp_path / "1.3.6.1.4.1.9590"))
    os.chmod(bare, 0o644)
    assert list_inputs(tmp_path) == [bare]
    assert np.array_equal(gray(bare), gray(source))
