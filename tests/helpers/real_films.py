"""The real films in ``../shared/data`` beside the checkout, and a small sample built from them.

None of these films (nor anything derived from them) may be committed, so tests that need real
films read them there and skip elsewhere, saying why (``real_data`` marker).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL_224 = SHARED_DATA / "chest_xray_224"
ORIGINALS = SHARED_DATA / "originals"

# 32 files chosen for what they hold (tests/data/test_real_sample.py): 224x224 re-encodes of the
# IM-/NORMAL2-IM- series, bacterial and viral cases, two byte-identical pairs, patients whose
# person number repeats across kinds; three full-resolution originals, one of them stored as
# RGB; and the first four films of each class of the official validation split.
SAMPLE_224 = {
    "train/NORMAL": [
        "IM-0115-0001.jpeg",
        "IM-0117-0001.jpeg",
        "IM-0119-0001.jpeg",
        "IM-0122-0001.jpeg",
        "IM-0125-0001.jpeg",
        "NORMAL2-IM-0383-0001.jpeg",
        "NORMAL2-IM-0384-0001.jpeg",
        "NORMAL2-IM-0385-0001.jpeg",
        "NORMAL2-IM-0386-0001.jpeg",
        "NORMAL2-IM-0587-0001-0001.jpeg",
        "NORMAL2-IM-0587-0001-0002.jpeg",
    ],
    "train/PNEUMONIA": [
        "person1000_bacteria_2931.jpeg",
        "person1000_virus_1681.jpeg",
        "person1001_bacteria_2932.jpeg",
        "person1002_bacteria_2933.jpeg",
        "person1003_virus_1685.jpeg",
        "person1004_virus_1686.jpeg",
        "person1139_bacteria_3081.jpeg",
        "person1177_virus_2000.jpeg",
        "person1261_virus_2147.jpeg",
        "person1261_virus_2148.jpeg",
    ],
    "val/NORMAL": [
        "NORMAL2-IM-1427-0001.jpeg",
        "NORMAL2-IM-1430-0001.jpeg",
        "NORMAL2-IM-1431-0001.jpeg",
        "NORMAL2-IM-1436-0001.jpeg",
    ],
    "val/PNEUMONIA": [
        "person1946_bacteria_4874.jpeg",
        "person1946_bacteria_4875.jpeg",
        "person1947_bacteria_4876.jpeg",
        "person1949_bacteria_4880.jpeg",
    ],
}
SAMPLE_ORIGINALS = [
    "train/NORMAL/NORMAL2-IM-0468-0001.jpeg",  # 1114x850 grayscale
    "train/PNEUMONIA/person1139_virus_1882.jpeg",  # 1364x805 grayscale
    "train/PNEUMONIA/person1177_virus_1999.jpeg",  # 763x440, stored as RGB
]


def require(folder: Path) -> Path:
    """``folder`` if this checkout has it; otherwise skip the test, saying what is missing."""
    if not folder.is_dir():
        pytest.skip(
            f"needs ../shared/data/{folder.relative_to(SHARED_DATA).as_posix()}: not present at "
            f"{folder} (only the project's workspace has the real films)"
        )
    return folder


def build_sample(out: Path) -> Path:
    """Copy the sample into ``out`` (the shared folder is read-only) and return ``out``."""
    require(REAL_224)
    require(ORIGINALS)
    wanted = [
        (REAL_224, f"{where}/{name}") for where, names in SAMPLE_224.items() for name in names
    ]
    wanted += [(ORIGINALS, name) for name in SAMPLE_ORIGINALS]
    for source, name in wanted:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, out / name)
    return out
