"""Study bookkeeping: the storage, which trials count, which are run again, when to stop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.utils import instantiate
from optuna.trial import FrozenTrial, TrialState

from cxrnet.search.space import SearchSettings

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"


def _make_storage(settings: SearchSettings, url: str) -> optuna.storages.RDBStorage:
    # SQLite's default 5 s lock timeout is short when a heartbeat thread writes alongside.
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if not settings.heartbeat_s:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
    # Renamed in Optuna 4.9; the old name still works there, with a deprecation warning.
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    if retry_cls is not None:
        retry = {"heartbeat_stale_trial_callback": retry_cls(max_retry=1)}
    else:
        retry = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=1)}
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=int(settings.heartbeat_s),
        grace_period=int(settings.grace_s) if settings.grace_s else None,
        **retry,
    )


def open_study(settings: SearchSettings, direction: str, study_dir: Path) -> optuna.Study:
    """Create the study, or load it when the storage already holds one of this name."""
    url = settings.storage_url(study_dir)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=_make_storage(settings, url),
        sampler=instantiate(settings.sampler) if settings.sampler else None,
        pruner=instantiate(settings.pruner) if settings.pruner else optuna.pruners.NopPruner(),
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {settings.study_name!r} in {url} was created to {study.direction.name.lower()}"
            f" but monitor_mode asks to {direction}; use another hparams_search.study_name"
        )
    return study


def check_trial_folders(study: optuna.Study, trials_dir: Path, url: str) -> None:
    """Trial folders are named by trial number; a folder the study does not know is a clash."""
    if not trials_dir.is_dir():
        return
    known = {trial.number for trial in study.get_trials(deepcopy=False)}
    strangers = sorted(
        int(p.name) for p in trials_dir.iterdir() if p.name.isdigit() and int(p.name) not in known
    )
    if strangers:
        raise RuntimeError(
            f"{trials_dir} holds trial folders {strangers[:5]} that the study in {url} does not "
            "know (was its database deleted?); choose another hparams_search.study_name or "
            "move the folder away"
        )


def _interrupted(trial: FrozenTrial) -> bool:
    return trial.state == TrialState.FAIL and trial.user_attrs.get("error") == INTERRUPTED


def _retried_numbers(trials: Sequence[FrozenTrial]) -> set[int]:
    """Trials run again: after Ctrl-C (ours) or a lost heartbeat (Optuna's "failed_trial")."""
    origins = {t.user_attrs.get("retry_of") for t in trials}
    origins |= {t.system_attrs.get("failed_trial") for t in trials}
    return {number for number in origins if number is not None}


def count_finished(study: optuna.Study) -> int:
    """Trials towards n_trials: one that was cut short and run again counts once."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    return sum(t.state in FINISHED and t.number not in retried for t in trials)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue each trial cut short by Ctrl-C once more with its parameters; their numbers."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    requeued = [t.number for t in trials if _interrupted(t) and t.number not in retried]
    for number in requeued:
        study.enqueue_trial(trials[number].params, user_attrs={"retry_of": number})
    return requeued


class StopAtNTrials:
    """Stop when the study holds ``n_trials`` counted trials, whichever worker ran them."""

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if count_finished(study) >= self.n_trials:
            study.stop()
