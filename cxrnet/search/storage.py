"""Where a study lives, and how a trial whose worker died is noticed and run again.

``hparams_search.storage`` picks one of three:

- ``sqlite`` (or null): ``<study folder>/study.db``. One machine: SQLite's file locks are not
  safe on NFS and similar shared file systems, so workers on several nodes must not share it.
- ``journal``: ``<study folder>/journal.log``, Optuna's append-only journal file, made for many
  workers on a shared file system. Appends are serialised by a lock file created with
  ``O_CREAT | O_EXCL`` (``JournalFileOpenLock``), which NFSv3 and later honour; a lock left by a
  killed worker is broken after 30 s.
- any SQLAlchemy URL (``postgresql://...``, ``mysql+pymysql://...``): a database server the
  user runs, for many workers anywhere.

Heartbeats: every running trial stamps the time into the storage each ``heartbeat_s``; a
running trial whose stamp is older than ``grace_s`` belongs to a worker that died (SIGKILL, node
failure, out of memory) and is failed and queued once more with the same parameters by the
next worker that asks for a trial. Optuna's RDB storage has this built in; its journal storage
has none, so ``HeartbeatJournalStorage`` adds it, storing the stamp as a trial system
attribute. (Stamps are wall-clock seconds from each worker's clock: nodes are assumed to keep
NTP time, as a cluster's do.)

A journal whose last record was torn (a worker killed in the middle of its write) is cut back
to its last whole line before a worker appends to it (``repair_journal``): Optuna's reader skips
the torn line, but the next append would be glued onto it and every later read would fail.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import optuna
from filelock import FileLock
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)


class StorageSettings(Protocol):
    """The part of ``cxrnet.search.space.SearchSettings`` that picks and opens the storage."""

    storage: str | None
    heartbeat_s: int | None
    grace_s: int | None


SQLITE = "sqlite"
JOURNAL = "journal"
STORAGE_KINDS = (SQLITE, JOURNAL)
SQLITE_FILE = "study.db"
JOURNAL_FILE = "journal.log"
HEARTBEAT_ATTR = "cxrnet_heartbeat"
# Held while a worker joins the study (create, requeue, enqueue, take a worker number).
WORKERS_LOCK = ".workers.lock"

StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


def check_storage_setting(storage: Any) -> None:
    if storage is None or storage in STORAGE_KINDS:
        return
    if isinstance(storage, str) and "://" in storage:
        return
    raise ValueError(
        f"hparams_search.storage must be 'sqlite' (one machine), 'journal' (many workers on a "
        f"shared file system) or a database URL such as postgresql://user@host/db, got "
        f"{storage!r}"
    )


def storage_location(settings: StorageSettings, study_dir: Path) -> str:
    """The storage as a URL (``journal://`` for the journal file): logs and study.json name it."""
    kind = settings.storage or SQLITE
    if kind == SQLITE:
        return f"sqlite:///{(study_dir / SQLITE_FILE).resolve()}"
    if kind == JOURNAL:
        return f"journal://{(study_dir / JOURNAL_FILE).resolve()}"
    return kind


def _retry_callback() -> StaleCallback:
    # Renamed in Optuna 4.9; the old name still works there, with a deprecation warning.
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
    return retry_cls(max_retry=1)


def open_storage(settings: StorageSettings, study_dir: Path) -> BaseStorage:
    """The study's storage, with heartbeats (and one retry of a dead worker's trial) if asked."""
    location = storage_location(settings, study_dir)
    heartbeat = int(settings.heartbeat_s) if settings.heartbeat_s else None
    grace = int(settings.grace_s) if settings.grace_s else None
    if location.startswith("journal://"):
        path = str(study_dir / JOURNAL_FILE)
        repair_journal(Path(path))
        backend = JournalFileBackend(path, lock_obj=JournalFileOpenLock(path))
        if heartbeat is None:
            return JournalStorage(backend)
        return HeartbeatJournalStorage(backend, heartbeat, grace, _retry_callback())
    # SQLite's default 5 s lock timeout is short when a heartbeat thread writes alongside.
    engine_kwargs = {"connect_args": {"timeout": 60}} if location.startswith("sqlite") else {}
    if heartbeat is None:
        return RDBStorage(location, engine_kwargs=engine_kwargs)
    callback_key = (
        "heartbeat_stale_trial_callback"
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback")
        else "failed_trial_callback"
    )
    return RDBStorage(
        location,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat,
        grace_period=grace,
        **{callback_key: _retry_callback()},
    )


def repair_journal(path: Path) -> None:
    """Cut a torn last record off the journal ``path``, and refuse a corrupt one elsewhere.

    Called holding ``workers_lock``, and holding the journal's own append lock, which every
    worker takes to append: a last line without its newline is then a write that a killed worker
    left, never one in progress. (Optuna writes each batch of records with one ``write`` ending in
    a newline, so a torn record is exactly a last line without one.)
    """
    if not path.is_file():
        return
    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        whole = 0  # bytes up to the end of the last whole line
        with path.open("rb") as journal:
            for number, line in enumerate(journal, start=1):
                if not line.endswith(b"\n"):
                    break  # the last line: torn
                try:
                    json.loads(line)
                except ValueError:
                    raise DataError(
                        f"{path} line {number} is not a journal record (a record torn by a "
                        f"worker killed mid-write, then appended to, or an edit): with no worker "
                        f"running, keep a copy of the file and delete that line (sed -i "
                        f"'{number}d' {path}), losing what it recorded, or start a new "
                        "study with another hparams_search.study_name"
                    ) from None
                whole += len(line)
        size = path.stat().st_size
        if size > whole:
            os.truncate(path, whole)
            log.warning(
                "%s ended in a torn record (a worker killed while writing it): dropped its %d "
                "byte(s), the study goes on from the last whole record",
                path,
                size - whole,
            )
    finally:
        lock.release()


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal storage with the heartbeat its RDB storage has (see the module doc)."""

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int,
        grace_period: int | None,
        stale_callback: StaleCallback | None,
    ) -> None:
        super().__init__(backend)
        self._heartbeat_interval = heartbeat_interval
        # Optuna's RDB default: two missed beats.
        self._grace_period = grace_period or 2 * heartbeat_interval
        self._stale_callback = stale_callback

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except UpdateFinishedTrialError:
            # Another worker took this one for dead (it beat too late) and failed the trial;
            # this worker's result will be refused when it reports it.
            log.warning("trial %d was failed by another worker: its heartbeat came late", trial_id)

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            if beat is None and trial.datetime_start is not None:
                beat = trial.datetime_start.timestamp()  # died before its first beat
            if beat is not None and now - float(beat) > self._grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback

    # The same under its pre-4.9 name, which older Optuna versions call.
    def get_failed_trial_callback(self) -> StaleCallback | None:
        return self._stale_callback


@contextlib.contextmanager
def workers_lock(study_dir: Path) -> Iterator[None]:
    """Held while a worker joins the study (so workers starting together, a job array, do not
    both queue the same retry or take the same worker number) and while it writes study.json.

    The file lock the image cache uses on shared storage (``cxrnet.publish``), not Optuna's: a
    signal that interrupts the wait for Optuna's lock deletes the lock file, even when another
    worker holds it, and a SIGTERM is what a worker must expect.
    """
    study_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(study_dir / WORKERS_LOCK)):
        yield
