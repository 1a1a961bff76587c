"""Recording a job: its record written when it starts and when it ends, however it ends."""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from cxrnet.runs import record as _record
from cxrnet.runs.record import RunRecord, RunStatus, status_for

# Distributions whose versions decide a run's numbers; recorded in every run.
RECORDED_PACKAGES = (
    "cxrnet",
    "torch",
    "torchvision",
    "lightning",
    "torchmetrics",
    "hydra-core",
    "albumentations",
    "opencv-python-headless",
    "numpy",
    "wandb",
)


@functools.cache
def installed_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.cache
def git_commit() -> str | None:
    """The commit of the cxrnet checkout in use (an editable install), else None."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(
            ["git", "-C", str(source), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(source), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


# --------------------------------------------------------------------------- recording a job


class RunRecorder:
    """Write a job's record when it starts and when it ends, however it ends.

    ``write=False`` (a DDP rank other than 0) keeps the bookkeeping but writes nothing::

        with RunRecorder(run_dir, "cxrnet-train", overrides, monitor) as recorder:
            ...
            recorder.complete(metrics, paths={"best_checkpoint": ...})
        recorder.record  # the final record
    """

    def __init__(
        self,
        run_dir: Path | str,
        command: str,
        overrides: Sequence[str] = (),
        monitor: str | None = None,
        *,
        write: bool = True,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.write = write
        self._started = time.time()
        self.record = RunRecord(
            status=RunStatus.RUNNING,
            run_dir=str(run_dir),
            command=command,
            overrides=tuple(str(o) for o in overrides),
            monitor=monitor,
            started_at=_now(),
            versions=installed_versions(),
            git_commit=git_commit(),
            extra=dict(extra or {}),
        )

    def _finish(self, status: RunStatus, **changes: Any) -> RunRecord:
        self.record = self.record.replace(
            status=status,
            ended_at=_now(),
            duration_s=round(time.time() - self._started, 1),
            **changes,
        )
        if self.write:
            _record.write_record(self.record)
        return self.record

    def complete(
        self, metrics: Mapping[str, float], paths: Mapping[str, Any] | None = None
    ) -> RunRecord:
        return self._finish(
            RunStatus.COMPLETED,
            metrics={k: float(v) for k, v in metrics.items()},
            paths={**self.record.paths, **(paths or {})},
        )

    def fail(self, error: BaseException) -> RunRecord:
        return self._finish(status_for(error), error=f"{type(error).__name__}: {error}")

    def update(self, **changes: Any) -> None:
        """Add to the record before it is finished (e.g. the data root once it is known)."""
        self.record = self.record.replace(**changes)

    def __enter__(self) -> RunRecorder:
        if self.write:
            _record.write_record(self.record)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self.record.status.finished:
            self.fail(RuntimeError("the job ended without reporting a result"))
