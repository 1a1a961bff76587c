"""The splits of a DDP job, resolved once by rank 0 and read by every other rank.

Finding the films, checking them for duplicates and splitting them walks and hashes the whole
data set: at hundreds of thousands of films, every rank doing it again costs minutes each and
loads the file system as many times over. Rank 0 does it and publishes the splits (before the
ranks are split into any per-rank share) in the run folder, ``.ddp_splits.json``; the other
ranks wait for that file and build their data from it, so all train on the same records.

The file carries the launch it belongs to, so a rank never reads the splits of an earlier
launch in the same folder (a resumed run). Every rank of one launch knows the same launch id:

* ``srun`` started every rank: the Slurm job, step and restart count;
* ``torchrun`` did: its run id and restart count;
* Lightning's launcher starts ranks 1.. by running the command again: rank 0 draws an id and
  leaves it in the environment, ``CXRNET_DDP_LAUNCH``, which those ranks inherit.

A rank other than 0 that knows no launch id (another launcher) resolves the splits itself, as
every rank did before, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cxrnet.data.records import Record
from cxrnet.publish import write_file
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)

SPLITS_FILE = ".ddp_splits.json"
# Set by rank 0 for the ranks Lightning's launcher starts (see above).
LAUNCH_ENV = "CXRNET_DDP_LAUNCH"
# How long a rank waits for rank 0's splits: rank 0 may be hashing every film of a cold start.
WAIT_ENV = "CXRNET_DDP_SPLITS_TIMEOUT_S"
DEFAULT_WAIT_S = 4 * 3600.0
_POLL_S = 0.5
_FORMAT = 1


def external_launch_id(environ: Mapping[str, str]) -> str | None:
    """The launch id that a launcher starting every rank itself gives all of them alike."""
    if int(environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) > 1 and environ.get("SLURM_JOB_ID"):
        return (
            f"slurm-{environ['SLURM_JOB_ID']}.{environ.get('SLURM_STEP_ID', '')}"
            f".{environ.get('SLURM_RESTART_COUNT', '0')}"
        )
    if environ.get("TORCHELASTIC_RUN_ID"):
        return (
            f"torchrun-{environ['TORCHELASTIC_RUN_ID']}"
            f".{environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"
        )
    return None


def _record_row(record: Record) -> list[object]:
    return [
        str(record.path),
        record.label,
        record.subtype,
        record.patient,
        record.source_split,
        [list(pair) for pair in record.meta],
        [list(pair) for pair in record.findings],
    ]


def _row_record(row: Sequence[object]) -> Record:
    path, label, subtype, patient, source_split, meta, findings = row
    return Record(
        path=Path(str(path)),
        label=int(label),  # type: ignore[arg-type]
        subtype=str(subtype),
        patient=str(patient),
        source_split=str(source_split),
        meta=tuple((str(key), str(value)) for key, value in meta),  # type: ignore[union-attr]
        findings=tuple((str(k), float(v)) for k, v in findings),  # type: ignore[union-attr]
    )


@dataclass
class SharedSplits:
    """One process's side of the exchange: rank 0 publishes, the others receive."""

    folder: Path
    rank: int
    launch: str | None

    @classmethod
    def for_this_process(
        cls, folder: Path | str, rank: int, environ: Mapping[str, str] | None = None
    ) -> SharedSplits:
        env = os.environ if environ is None else environ
        launch = external_launch_id(env)
        if launch is None and rank != 0:
            launch = env.get(LAUNCH_ENV) or None
        # Rank 0 without a launcher's id draws a new one when it publishes: one left in its
        # environment by an earlier job of a sweep belongs to that job.
        return cls(Path(folder), rank, launch)

    @property
    def path(self) -> Path:
        return self.folder / SPLITS_FILE

    @property
    def receives(self) -> bool:
        """Whether this rank reads the splits instead of resolving them."""
        if self.rank == 0:
            return False
        if self.launch is None:
            log.warning(
                "rank %d shares no launch id with rank 0 (started neither by Lightning's "
                "launcher, srun nor torchrun): it finds and splits the films itself",
                self.rank,
            )
        return self.launch is not None

    def publish(self, splits: Mapping[str, Sequence[Record]]) -> None:
        """Rank 0: write the splits for this launch's other ranks (a new id unless a launcher
        gave one; Lightning's launcher passes it on to the ranks it starts)."""
        self._publish(
            {"splits": {name: [_record_row(r) for r in rs] for name, rs in splits.items()}}
        )

    def publish_failure(self, error: BaseException) -> None:
        """Rank 0 failed before publishing its splits: waiting ranks stop with its reason."""
        if self.launch is None:
            return  # no rank can be waiting: the launcher has not started any yet
        self._publish({"error": f"{type(error).__name__}: {error}"})

    def _publish(self, payload: dict[str, object]) -> None:
        if self.launch is None:
            self.launch = uuid.uuid4().hex
            os.environ[LAUNCH_ENV] = self.launch
        text = json.dumps({"format": _FORMAT, "launch": self.launch, **payload})
        write_file(self.path, lambda temporary: temporary.write_text(text, encoding="ascii"))
        log.info("published the splits for the other ranks in %s", self.path)

    def receive(self, timeout_s: float | None = None) -> dict[str, list[Record]]:
        """The splits rank 0 published for this launch, waiting for them up to ``timeout_s``
        (default: ``CXRNET_DDP_SPLITS_TIMEOUT_S`` or four hours)."""
        timeout = _timeout() if timeout_s is None else timeout_s
        deadline = time.monotonic() + timeout
        seen: tuple[int, int] | None = None
        while True:
            content = self._read_if_changed(seen)
            if content is not None:
                seen, payload = content
                if payload.get("launch") == self.launch:
                    return self._splits(payload)
            if time.monotonic() > deadline:
                raise DataError(
                    f"rank {self.rank} waited {timeout:.0f} s for rank 0 to write the splits of "
                    f"launch {self.launch} to {self.path}, and they did not come: see rank 0's "
                    f"output for why; if rank 0 only needs longer (a cold start hashes every "
                    f"film), raise {WAIT_ENV}"
                )
            time.sleep(_POLL_S)

    def _read_if_changed(
        self, seen: tuple[int, int] | None
    ) -> tuple[tuple[int, int], dict[str, object]] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp == seen:
            return None
        try:
            payload = json.loads(self.path.read_text(encoding="ascii"))
        except FileNotFoundError:  # replaced between the stat and the read: look again
            return None
        return stamp, payload

    def _splits(self, payload: dict[str, object]) -> dict[str, list[Record]]:
        if "error" in payload:
            raise DataError(f"rank 0 could not resolve the splits: {payload['error']}")
        splits = payload["splits"]
        assert isinstance(splits, dict)
        received = {name: [_row_record(row) for row in rows] for name, rows in splits.items()}
        log.info(
            "rank %d received the splits from rank 0 (%s): %s",
            self.rank,
            self.path,
            ", ".join(f"{name} {len(records)}" for name, records in received.items()),
        )
        return received


def _timeout() -> float:
    value = os.environ.get(WAIT_ENV, "")
    if not value:
        return DEFAULT_WAIT_S
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise DataError(f"{WAIT_ENV}={value!r} must be a number of seconds > 0")
    return seconds
