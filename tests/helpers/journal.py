"""A search study in a journal file, where ``cxrnet-search`` with ``paths.log_dir=<log_dir>``
and ``hparams_search.storage=journal`` keeps it: for tests that prepare a study's state (a torn
record, a trial left running) before a worker runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def new_journal_study(log_dir: Path, name: str) -> tuple[Path, Any, Any]:
    """The journal's path, its storage and the study, created as a first worker leaves it."""
    import optuna  # the optuna extra; callers skip without it

    journal = log_dir / "search" / name / "journal.log"
    journal.parent.mkdir(parents=True)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    study.set_user_attr("cxrnet_workers", 1)
    return journal, storage, study
