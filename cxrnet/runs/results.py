"""The jobs being compared: each job folder's run record, overrides and saved config."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cxrnet.runs import (
    MISSING,
    RecordError,
    RunRecord,
    RunStatus,
    Value,
    find_job_dirs,
    lookup,
    overrides_as_dict,
    parse_value,
    read_record,
)

COMPLETED = RunStatus.COMPLETED.value
UNFINISHED = "unfinished"
UNREADABLE = "unreadable"


@dataclass(frozen=True)
class RunResult:
    """One job folder: its overrides, its final metrics and how it ended."""

    path: Path
    status: str
    overrides: dict[str, Value] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    monitor: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)
    record: RunRecord | None = field(default=None, repr=False)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def value(self, key: str) -> Value:
        """The job's value for ``key``: its override, else the scalar in its saved config.

        Looking in the config lets a job that kept a default group with jobs that set the same
        value on the command line.
        """
        if key in self.overrides:
            return self.overrides[key]
        return _config_scalar(self.config, key)


def _config_scalar(config: Mapping[str, Any], dotted: str) -> Value:
    node = lookup(config, dotted)
    if node is MISSING:
        return None
    if node is None:
        return "null"
    if isinstance(node, str):
        return parse_value(node)
    if isinstance(node, bool | int | float):
        return node
    return None  # a group's dict or a list: not comparable with an override string


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _first_yaml(*paths: Path) -> Any:
    for path in paths:
        if path.is_file():
            return _read_yaml(path)
    return None


def read_run(job_dir: Path) -> RunResult:
    """The job in ``job_dir``; never raises for a broken job, which is reported instead.

    The run record names the job's overrides; a job that died before writing one still has
    Hydra's ``.hydra/overrides.yaml``. The config is the resolved ``config.yaml`` the job saved.
    """
    hydra_dir = job_dir / ".hydra"
    try:
        record = read_record(job_dir)
        raw_overrides: Any = (
            list(record.overrides)
            if record is not None and record.overrides
            else _read_yaml(hydra_dir / "overrides.yaml") or []
        )
        if not isinstance(raw_overrides, list):
            raise ValueError(f"expected a YAML list, got {type(raw_overrides).__name__}")
        config = _first_yaml(job_dir / "config.yaml", hydra_dir / "config.yaml") or {}
    except RecordError as exc:
        return RunResult(job_dir, UNREADABLE, error=str(exc))
    except (OSError, yaml.YAMLError, ValueError) as exc:
        return RunResult(job_dir, UNREADABLE, error=f"{hydra_dir} is unreadable: {exc}")
    config = config if isinstance(config, dict) else {}
    overrides = overrides_as_dict(raw_overrides)
    if record is None or record.status is RunStatus.RUNNING:
        message = "no final record: still running, or killed before it finished"
        return RunResult(job_dir, UNFINISHED, overrides, error=message, config=config)
    return RunResult(
        path=job_dir,
        status=record.status.value,
        overrides=overrides,
        metrics=record.metrics,
        error=record.error,
        monitor=record.monitor,
        config=config,
        record=record,
    )


def collect_runs(folders: Iterable[Path | str]) -> list[RunResult]:
    """All jobs below ``folders``, each once even when the folders overlap."""
    seen: set[Path] = set()
    runs: list[RunResult] = []
    for folder in folders:
        for job_dir in find_job_dirs(folder):
            if job_dir.resolve() not in seen:
                seen.add(job_dir.resolve())
                runs.append(read_run(job_dir))
    return runs
