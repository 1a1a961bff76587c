"""The machine a benchmark runs on: what its tables state about it, and where its data lies."""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def shared_data() -> Path:
    """The real 224 px films: ../shared beside the checkout, or beside the folder of worktrees
    that holds it (the first that exists; else the former, for the error message)."""
    for folder in (REPO.parent, REPO.parent.parent):
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data" / "chest_xray_224"
    return REPO.parent / "shared" / "data" / "chest_xray_224"


def cpu_name() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def run_facts() -> dict[str, object]:
    """When and on what a benchmark ran, for the head of its JSON: the load average says how
    far another job may have slowed it."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
    }
