"""The record type, its statuses, and writing and reading it whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from cxrnet.publish import write_json_atomic

RECORD_NAME = "metrics.json"
SCHEMA_VERSION = 2


class RunStatus(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    PRUNED = "pruned"
    INTERRUPTED = "interrupted"

    @property
    def finished(self) -> bool:
        return self is not RunStatus.RUNNING


class RunStopped(Exception):
    """Raised to end a job with a status other than ``failed`` (e.g. a pruned search trial)."""

    status: RunStatus = RunStatus.FAILED

    def __init__(self, message: str = "", status: RunStatus | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


def status_for(error: BaseException) -> RunStatus:
    """How a job that raised ``error`` ended."""
    if isinstance(error, RunStopped):
        return error.status
    if isinstance(error, KeyboardInterrupt):
        return RunStatus.INTERRUPTED
    return RunStatus.FAILED


@dataclass(frozen=True)
class RunRecord:
    """One job: how it ended, what it was asked to do, what it measured and where it wrote."""

    status: RunStatus
    run_dir: str
    command: str = "cxrnet-train"
    overrides: tuple[str, ...] = ()
    monitor: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    # Files and folders the job used or produced: best_checkpoint, data_root, ckpt_path, ...
    paths: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    started_at: str | None = None
    ended_at: str | None = None
    duration_s: float | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    # Anything a kind of job adds that tools need not understand (e.g. a search trial's number).
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        payload = dataclasses.asdict(self)
        payload["status"] = self.status.value
        payload["overrides"] = list(self.overrides)
        payload["schema"] = SCHEMA_VERSION
        return payload

    @classmethod
    def from_json(cls, payload: Mapping[str, Any], run_dir: Path | str) -> RunRecord:
        """Lenient: a record written by an older cxrnet (no schema) reads with what it has."""
        try:
            status = RunStatus(str(payload.get("status", "")))
        except ValueError as error:
            raise ValueError(f"unknown status {payload.get('status')!r}") from error
        paths = dict(payload.get("paths") or {})
        for legacy in ("best_model_path", "data_root", "ckpt_path"):
            if legacy in payload and legacy not in paths:
                paths[legacy] = payload[legacy]
        raw_metrics = payload.get("metrics") or {}
        metrics = {
            str(name): float(value)
            for name, value in (raw_metrics.items() if isinstance(raw_metrics, Mapping) else ())
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        error = payload.get("error")
        monitor = payload.get("monitor")
        return cls(
            status=status,
            run_dir=str(payload.get("run_dir") or run_dir),
            command=str(payload.get("command") or "cxrnet-train"),
            overrides=tuple(str(o) for o in payload.get("overrides") or ()),
            monitor=None if monitor is None else str(monitor),
            metrics=metrics,
            paths=paths,
            error=None if error is None else str(error),
            started_at=payload.get("started_at"),
            ended_at=payload.get("ended_at"),
            duration_s=payload.get("duration_s"),
            versions=dict(payload.get("versions") or {}),
            git_commit=payload.get("git_commit"),
            extra=dict(payload.get("extra") or {}),
        )

    def replace(self, **changes: Any) -> RunRecord:
        return dataclasses.replace(self, **changes)


def write_record(record: RunRecord, path: Path | None = None) -> Path:
    path = path or Path(record.run_dir) / RECORD_NAME
    write_json_atomic(path, record.to_json())
    return path


class RecordError(ValueError):
    """A job folder's record exists but cannot be read."""


def read_record(run_dir: Path | str) -> RunRecord | None:
    """The record in ``run_dir``; None when the job never wrote one; RecordError when broken."""
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        return None
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict):
            raise ValueError(f"expected a JSON object, got {type(payload).__name__}")
        return RunRecord.from_json(payload, run_dir)
    except (OSError, ValueError) as error:  # JSONDecodeError is a ValueError
        raise RecordError(f"{path} is unreadable: {error}") from error
