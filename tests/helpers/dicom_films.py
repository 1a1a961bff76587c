"""DICOM films written with pydicom, with a patient name and birth date in every header so a
test can look for them where they must never appear."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

PATIENT_NAME = "Doe^Jane"
BIRTH_DATE = "19700101"


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    bits_stored: int | None = None,
    photometric: str = "MONOCHROME2",
    preamble: bool = True,
    syntax: UID = ExplicitVRLittleEndian,
    **tags: object,
) -> Path:
    """``pixels`` (uint8/uint16/int16; (rows, cols), (frames, rows, cols) or (rows, cols, 3))
    as a DICOM file; ``tags`` set further elements (WindowCenter=..., RescaleSlope=...)."""
    pixels = np.asarray(pixels)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientBirthDate = BIRTH_DATE
    ds.PatientID = "cxr-0001"
    colour = pixels.ndim == 3 and pixels.shape[-1] == 3
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    if pixels.ndim == 3 and not colour:
        ds.NumberOfFrames = pixels.shape[0]
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = int(pixels.dtype.kind == "i")
    for name, value in tags.items():
        setattr(ds, name, value)
    if syntax.is_compressed:
        ds.PixelData = pixels.tobytes()  # compress() below replaces it
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(syntax)
    else:
        ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=preamble)
    return path
