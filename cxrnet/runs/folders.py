"""Finding the job folders below a sweep or study folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cxrnet.runs.record import RECORD_NAME


def is_job_dir(folder: Path) -> bool:
    """A folder a job ran in: it holds a record, or Hydra's record of the job's overrides."""
    return (folder / RECORD_NAME).is_file() or (folder / ".hydra" / "overrides.yaml").is_file()


def _natural_key(path: Path) -> list[object]:
    # Job folders are numbered: 2/ before 10/.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_job_dirs(folder: Path | str) -> list[Path]:
    """Every job folder at or below ``folder``; a job's own subfolders are not searched."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"sweep folder {folder} does not exist or is not a folder; pass the folder that "
            "cxrnet-train -m wrote (e.g. multirun/<date>/<time>) or a single run's folder"
        )
    found: list[Path] = []
    for dirpath, dirnames, _filenames in os.walk(folder):
        here = Path(dirpath)
        if is_job_dir(here):
            found.append(here)
            dirnames.clear()
        else:
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
    return sorted(found, key=_natural_key)
