"""Study bookkeeping: the storage, which trials count, which are run again, when to stop."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import optuna
from hydra.utils import instantiate
from optuna.trial import FrozenTrial, TrialState

from cxrnet.search.space import SearchSettings
from cxrnet.search.storage import open_storage, storage_location

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"
# How many workers (sessions of cxrnet-search) have joined the study, a study user attribute.
WORKERS_ATTR = "cxrnet_workers"


def _sampler(settings: SearchSettings, worker: int) -> optuna.samplers.BaseSampler | None:
    if not settings.sampler:
        return None
    seed = settings.sampler.get("seed")
    if seed is None:
        return instantiate(settings.sampler)
    # Workers (and later sessions of one study) seeded alike would draw the same random
    # parameters: worker k of the study samples with seed + k.
    return instantiate(settings.sampler, seed=int(seed) + worker)


def open_study(settings: SearchSettings, direction: str, study_dir: Path) -> optuna.Study:
    """Create the study, or load it when the storage already holds one of this name, and join
    it as its next worker. Call it holding ``workers_lock``."""
    location = storage_location(settings, study_dir)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=open_storage(settings, study_dir),
        pruner=instantiate(settings.pruner) if settings.pruner else optuna.pruners.NopPruner(),
        direction=direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != direction:
        raise ValueError(
            f"study {settings.study_name!r} in {location} was created to "
            f"{study.direction.name.lower()} but monitor_mode asks to {direction}; use another "
            "hparams_search.study_name"
        )
    worker = int(study.user_attrs.get(WORKERS_ATTR, 0))
    study.set_user_attr(WORKERS_ATTR, worker + 1)
    sampler = _sampler(settings, worker)
    if sampler is not None:
        study.sampler = sampler
    return study


def check_trial_folders(study: optuna.Study, trials_dir: Path, url: str) -> None:
    """Trial folders are named by trial number; a folder the study does not know is a clash."""
    if not trials_dir.is_dir():
        return
    # Folders first: another worker creates a trial in the storage before its folder, so every
    # folder listed here belongs to a trial the study then knows.
    numbers = [int(p.name) for p in trials_dir.iterdir() if p.name.isdigit()]
    known = {trial.number for trial in study.get_trials(deepcopy=False)}
    strangers = sorted(number for number in numbers if number not in known)
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


def count_running(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def count_started(study: optuna.Study) -> int:
    """Trials towards n_trials, finished or running on any worker: one that was cut short and
    run again counts once."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    counted = (*FINISHED, TrialState.RUNNING)
    return sum(t.state in counted and t.number not in retried for t in trials)


def fail_dead_workers_trials(study: optuna.Study) -> None:
    """Fail the running trials whose heartbeat stopped, queueing each once more (Optuna does
    this only before each of its trials; a worker about to stop or start must not wait)."""
    optuna.storages.fail_stale_trials(study)


def requeue_interrupted(study: optuna.Study) -> list[int]:
    """Queue each trial cut short by Ctrl-C or SIGTERM once more with its parameters; their
    numbers. Call it holding ``workers_lock``, or two workers may queue the same trial."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried_numbers(trials)
    requeued = [t.number for t in trials if _interrupted(t) and t.number not in retried]
    for number in requeued:
        study.enqueue_trial(trials[number].params, user_attrs={"retry_of": number})
    return requeued


class StopAtNTrials:
    """Stop when the study holds ``n_trials`` counted trials, finished or still running on
    another worker: n_trials counts across every worker of the study. (Workers that finish a
    trial at the same moment may each start one more: the count can overshoot by that many.)
    """

    def __init__(self, n_trials: int) -> None:
        self.n_trials = n_trials

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        fail_dead_workers_trials(study)
        if count_started(study) >= self.n_trials:
            study.stop()
