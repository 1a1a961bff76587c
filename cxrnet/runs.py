"""The run record: what every job writes to ``<run folder>/metrics.json`` and how tools read it.

One type, ``RunRecord``, for every kind of job (``cxrnet-train``, ``cxrnet-eval``, a search trial),
written whole or not at all by ``write_record`` and read back by ``read_record``. A job writes its
record twice: ``running`` when it starts (with its overrides, so a job killed before it finished is
still a job that tools can list) and its final status when it ends. ``RunRecorder`` does both and
turns whatever ended the job into a status: ``RunStopped`` carries one (a pruned trial is written
as ``pruned`` the first time), a signal or Ctrl-C is ``interrupted``, any other exception
``failed``.

Also here, because every tool that reads or writes jobs needs them: the one parser of Hydra
override strings (``Override``) and job-folder discovery (``find_job_dirs``).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

RECORD_NAME = "metrics.json"
SCHEMA_VERSION = 2
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

Value = str | int | float | bool | None


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


# --------------------------------------------------------------------------- overrides


@dataclass(frozen=True)
class Override:
    """One Hydra command-line override: ``[+|++|~]key[=value]``."""

    key: str
    value: str | None  # the raw text after '=', None for a bare deletion (``~key``)
    prefix: str = ""  # "", "+", "++" or "~"

    @classmethod
    def parse(cls, text: object) -> Override:
        raw = str(text).strip()
        prefix = re.match(r"^(\+\+|\+|~)?", raw).group(0)  # type: ignore[union-attr]
        key, sep, value = raw[len(prefix) :].partition("=")
        return cls(key.strip(), value if sep else None, prefix)

    @property
    def deleted(self) -> bool:
        return self.prefix == "~"

    def in_group(self, *groups: str) -> bool:
        """True for ``group``, ``group.x`` and ``group/x`` keys of any of ``groups``."""
        return any(
            self.key == group or self.key.startswith((f"{group}.", f"{group}/")) for group in groups
        )

    @property
    def is_hydra(self) -> bool:
        """Hydra's own settings (output folders, launcher): not part of an experiment."""
        return self.in_group("hydra")

    def typed_value(self) -> Value:
        return "(deleted)" if self.deleted else parse_value(self.value or "")

    def __str__(self) -> str:
        return self.prefix + self.key + ("" if self.value is None else f"={self.value}")


def parse_value(text: str) -> Value:
    """An override's value as a number, bool or string, so ``1e-3`` and ``0.001`` compare equal."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def overrides_as_dict(lines: Iterable[object]) -> dict[str, Value]:
    """``["+a.b=1", "model=x"]`` as ``{"a.b": 1, "model": "x"}``; Hydra's own keys are dropped."""
    parsed: dict[str, Value] = {}
    for line in lines:
        override = Override.parse(line)
        if override.is_hydra or (override.value is None and not override.deleted):
            continue
        parsed[override.key] = override.typed_value()
    return parsed


_BARE_STRING = re.compile(r"[A-Za-z_][\w\-./]*")
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def format_override_value(value: Value) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # shortest round-trip form, e.g. 0.00031622776601683794
    if _BARE_STRING.fullmatch(value) and value.lower() not in _HYDRA_WORDS:
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def format_overrides(params: Mapping[str, Value]) -> list[str]:
    return [f"{key}={format_override_value(value)}" for key, value in params.items()]


# --------------------------------------------------------------------------- the record


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


def json_safe(value: Any) -> Any:
    """NaN and infinity are not JSON; write them as null rather than an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write a JSON file whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(json_safe(payload), indent=2, sort_keys=True, default=str, allow_nan=False)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(path)


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


# --------------------------------------------------------------------------- environment


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
    source = Path(__file__).resolve().parent.parent
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
            write_record(self.record)
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
            write_record(self.record)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self.fail(exc)
        elif not self.record.status.finished:
            self.fail(RuntimeError("the job ended without reporting a result"))


# --------------------------------------------------------------------------- job folders


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
