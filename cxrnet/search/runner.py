"""The search runner: an Optuna study over the train config, one training run per trial
(``cxrnet-search`` composes the config and calls ``search``).

    cxrnet-search data.root=/data/chest_xray trainer.max_epochs=10 hparams_search.n_trials=40

Each trial samples the keys declared in ``conf/hparams_search/<name>.yaml`` (a float, int or
categorical distribution per train-config key), composes the train config from the user's
overrides plus the sampled ones, and trains it with ``cxrnet.training.run.run`` into its own folder
``<study folder>/trials/<number>``, which holds ``.hydra/overrides.yaml`` and ``metrics.json`` like
a multirun job, so ``cxrnet-compare <study folder>`` tabulates the study. The objective is the
validation metric ``monitor`` of the best epoch; trials never test (``test=false``).

- Pruning: a Lightning callback reports ``monitor`` to the trial after every validation epoch
  and stops the trial when the pruner (MedianPruner by default) says so; state PRUNED.
- Failures: a trial that raises (a non-finite training loss, out of memory, a bad combination
  of settings) is recorded as FAIL with its error and the search goes on. A NaN loss does not
  raise by itself (training "completes" with a meaningless score), so a callback checks every
  training loss; ``detect_anomaly`` would, at several times the cost of a step.
- Resuming: the study lives in its storage in the study folder (SQLite by default), named by
  the study, not the time; running the same command again loads it and runs trials until
  ``n_trials`` have finished. A trial cut short by Ctrl-C or SIGTERM is queued again at once and
  run first; one whose process died (SIGKILL, a lost node) is failed after a heartbeat grace
  period and retried once.
- Many workers: the same command started several times (Slurm jobs, a job array) with
  ``hparams_search.storage=journal`` (a journal file on shared disk) or a database URL shares
  one study: each worker asks the storage for the next trial, ``n_trials`` counts every
  worker's trials, worker k samples with seed + k (identical seeds would draw identical
  trials), and study.json lists every worker's trials. See cxrnet/search/storage.py.

Why Optuna is driven directly rather than through hydra-optuna-sweeper: the released sweeper
needs optuna < 3 (and its SQLite storage fails under SQLAlchemy 2); the line that supports current
Optuna is a pre-release. A sweeper also only sees each job's return value, so it cannot prune:
pruning needs a callback inside the training loop, which ``train.run(cfg, extra_callbacks)``
takes from here. What remains is small and under our control: compose per trial, two callbacks,
the storage.
"""

from __future__ import annotations

import gc
import json
import logging
import math
import os
import signal
import socket
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from cxrnet.evaluation.metrics import monitor_mode_for
from cxrnet.publish import write_json_atomic
from cxrnet.runs import (
    MISSING,
    Override,
    RunStatus,
    RunStopped,
    format_overrides,
    lookup,
)
from cxrnet.runs.slurm import slurm_job_id
from cxrnet.search.pruning import ReportToTrial
from cxrnet.search.signals import SearchInterrupted, stop_on_sigterm
from cxrnet.search.space import Choice, SearchSettings, round_float
from cxrnet.search.storage import storage_location, workers_lock
from cxrnet.search.study import (
    INTERRUPTED,
    StopAtNTrials,
    check_trial_folders,
    count_running,
    count_started,
    fail_dead_workers_trials,
    open_study,
    requeue_interrupted,
)
from cxrnet.search.summary import print_summary, summarize_study
from cxrnet.training.callbacks import FailOnNonFinite
from cxrnet.training.run import Launch
from cxrnet.training.run import run as run_training

log = logging.getLogger(__name__)

ComposeFn = Callable[[Sequence[str]], DictConfig]

TRIALS_DIR = "trials"
SUMMARY_NAME = "study.json"
DIRECTIONS = {"max": "maximize", "min": "minimize"}
# Override keys that configure the search or Hydra itself, not the trained model.
_NOT_TRAIN_KEYS = ("hparams_search", "hydra")


# --------------------------------------------------------------------------- objective


def _is_train_override(override: str) -> bool:
    return not Override.parse(override).in_group(*_NOT_TRAIN_KEYS)


def worker_name() -> str:
    """Which worker ran a trial: its Slurm job (array task), else host and process."""
    job = slurm_job_id() if os.environ.get("SLURM_JOB_ID") else None
    if job:
        return f"slurm-{job}"
    return f"{socket.gethostname()}-{os.getpid()}"


def _release_memory() -> None:
    # An out-of-memory trial must not leave the next one short of (GPU) memory.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@dataclass
class Objective:
    """Compose, train and score one trial in its own folder."""

    settings: SearchSettings
    study_dir: Path
    user_overrides: list[str]
    compose: ComposeFn
    monitor: str

    @property
    def train_overrides(self) -> list[str]:
        """The user's overrides that a plain cxrnet-train run of a trial needs."""
        return [o for o in self.user_overrides if _is_train_override(o)]

    @property
    def compose_overrides(self) -> list[str]:
        """The user's overrides minus Hydra's own (output folders, launcher): those are the
        search session's, and a trial's config has no ``hydra`` node."""
        return [o for o in self.user_overrides if not Override.parse(o).is_hydra]

    def trial_config(self, params: Mapping[str, Choice], run_dir: Path) -> DictConfig:
        cfg = self.compose([*self.compose_overrides, *format_overrides(params)])
        with open_dict(cfg):
            cfg.paths.output_dir = str(run_dir)
            cfg.test = False
            cfg.pop("hparams_search", None)
            cfg.pop("hydra", None)
            wandb_cfg = (cfg.get("logger") or {}).get("wandb")
            if wandb_cfg is not None:
                # One W&B group per study, one run per trial.
                if wandb_cfg.get("group") is None:
                    wandb_cfg.group = f"search-{self.settings.study_name}"
                if wandb_cfg.get("name") is None:
                    wandb_cfg.name = f"{self.settings.study_name}-trial-{run_dir.name}"
        return cfg

    def __call__(self, trial: optuna.Trial) -> float:
        params = {spec.key: round_float(spec.suggest(trial)) for spec in self.settings.space}
        run_dir = self.study_dir / TRIALS_DIR / str(trial.number)
        overrides = [*self.train_overrides, *format_overrides(params)]
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("values", params)  # as trained: rounded (trial.params are exact)
        trial.set_user_attr("overrides", overrides)
        trial.set_user_attr("worker", worker_name())
        try:
            cfg = self.trial_config(params, run_dir)
            callbacks: list[Callback] = [ReportToTrial(trial, self.monitor)]
            if not (cfg.get("callbacks") or {}).get("fail_on_non_finite"):
                # Switched off for training runs, but a trial must still fail, not rank NaN.
                callbacks.insert(0, FailOnNonFinite(self.monitor))
            # A trial is an ordinary job folder: its run record carries the overrides that
            # reproduce it, so cxrnet-compare reads it like a multirun job.
            record = run_training(
                cfg,
                callbacks,
                launch=Launch(overrides=tuple(overrides)),
                extra={"study": self.settings.study_name, "trial": trial.number},
            )
            value = record.metrics.get(self.monitor)
            if value is None:
                raise KeyError(f"{self.monitor} is not among the run's metrics {record.metrics}")
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.monitor} is {value}: the trial cannot be ranked")
            return float(value)
        except optuna.TrialPruned:
            raise  # recorded as pruned by the run itself
        except SearchInterrupted:
            trial.set_user_attr("error", INTERRUPTED)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            # Lightning turns Ctrl-C into SystemExit; Optuna only records KeyboardInterrupt
            # (as FAIL), and would leave the trial RUNNING forever otherwise.
            trial.set_user_attr("error", INTERRUPTED)
            raise KeyboardInterrupt("search interrupted") from exc
        except RunStopped as exc:
            if exc.status is not RunStatus.INTERRUPTED:
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                raise
            # Stopped by SIGTERM while training (Lightning's handler): the worker stops too.
            trial.set_user_attr("error", INTERRUPTED)
            raise KeyboardInterrupt(f"search interrupted: {exc}") from exc
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _release_memory()


def _check_search_inputs(
    settings: SearchSettings, train_overrides: Sequence[str], probe: DictConfig
) -> None:
    searched = {spec.key for spec in settings.space}
    clashes = sorted(searched & {Override.parse(o).key for o in train_overrides})
    if clashes:
        raise ValueError(
            f"{clashes} are both set on the command line and searched; drop the override or "
            f"stop searching the key, e.g. ~hparams_search.space.{clashes[0]}"
        )
    # Unresolved: a key whose value is an interpolation or ??? exists all the same.
    plain = OmegaConf.to_container(probe, resolve=False)
    missing = [key for key in sorted(searched) if lookup(plain, key) is MISSING]
    if missing:
        raise ValueError(
            f"hparams_search.space declares {missing}, which the train config does not have "
            "(a typo, or a key that needs a different model/data config)"
        )


def _join_study(
    settings: SearchSettings, direction: str, study_dir: Path, location: str
) -> optuna.Study:
    """The study, opened or created, its trial folders checked and its interrupted trials (and
    those of dead workers) queued again, ahead of ``settings.enqueue``."""
    # Workers of one study (a job array) start together: one at a time joins it.
    with workers_lock(study_dir):
        study = open_study(settings, direction, study_dir)
        check_trial_folders(study, study_dir / TRIALS_DIR, location)
        fail_dead_workers_trials(study)
        requeued = requeue_interrupted(study)
        if requeued:
            log.info("trial(s) %s were interrupted: they run again first", requeued)
        for params in settings.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
    return study


def _log_start(study: optuna.Study, settings: SearchSettings, location: str) -> int:
    """Log where the study stands as this worker joins; returns the trials already started."""
    started = count_started(study)
    log.info(
        "study %s in %s, worker %s: %d trial(s) finished or running, %d to start",
        settings.study_name,
        location,
        worker_name(),
        started,
        max(settings.n_trials - started, 0),
    )
    running = count_running(study)
    if started >= settings.n_trials and running:
        log.info(
            "%d trial(s) still running: on other workers, or left by a worker that died, "
            "which a worker started once its heartbeat is hparams_search.grace_s old runs "
            "again",
            running,
        )
    return started


def _report_running(study: optuna.Study, settings: SearchSettings) -> None:
    """Say which of the study's trials are still running as this worker leaves: their worker
    may have died, and the user should know when (or whether) they run again."""
    numbers = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if not numbers:
        return
    if settings.heartbeat_s:
        grace = settings.grace_s or 2 * settings.heartbeat_s
        then = (
            f"if their worker died, they are failed and run again once, when their heartbeat "
            f"is hparams_search.grace_s ({grace} s) old, by a worker of the study still running "
            "or one started later (this command again)"
        )
    else:
        then = (
            "hparams_search.heartbeat_s is off, so a trial whose worker died stays running and "
            "is never run again; switch it on for this study's next workers"
        )
    log.warning(
        "this worker leaves trial(s) %s of study %s running: on other workers, or left by a "
        "worker that died; %s",
        numbers,
        settings.study_name,
        then,
    )


def search(
    cfg: DictConfig, study_dir: Path, user_overrides: Sequence[str], compose: ComposeFn
) -> dict[str, Any]:
    """Run (or resume) the study ``cfg.hparams_search`` describes; returns the summary.

    ``compose(overrides)`` builds a trial's config from the same config ``cfg`` came from;
    ``user_overrides`` are the command line's, replayed for every trial.
    """
    settings = SearchSettings.from_config(cfg.hparams_search)
    monitor = str(cfg.monitor)
    if not monitor.startswith("val/"):
        raise ValueError(f"the search optimises a validation metric; monitor is {monitor!r}")
    direction = DIRECTIONS[monitor_mode_for(monitor, cfg.get("monitor_mode"))]
    objective = Objective(settings, study_dir, list(user_overrides), compose, monitor)
    train_overrides = objective.train_overrides
    # One composition up front: a bad override fails here, not once per trial.
    _check_search_inputs(settings, train_overrides, compose(objective.compose_overrides))

    study_dir.mkdir(parents=True, exist_ok=True)
    location = storage_location(settings, study_dir)
    summary_path = study_dir / SUMMARY_NAME

    def write_summary(study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
        # Read and written under the lock: the last summary written is then the last read, and
        # sees every worker's trials.
        with workers_lock(study_dir):
            summary = summarize_study(study, monitor, location, train_overrides)
            write_json_atomic(summary_path, summary)

    with warnings.catch_warnings(), stop_on_sigterm() as sigterm:
        # Heartbeats and retries are marked experimental; they are what makes resuming work.
        warnings.simplefilter("ignore", ExperimentalWarning)
        study = _join_study(settings, direction, study_dir, location)
        started = _log_start(study, settings, location)
        try:
            if started < settings.n_trials:
                # No per-worker number of trials: StopAtNTrials counts every worker's.
                study.optimize(
                    objective,
                    timeout=settings.timeout_s,
                    catch=(Exception,),
                    callbacks=[StopAtNTrials(settings.n_trials), write_summary, sigterm.stop_study],
                    gc_after_trial=True,
                )
            sigterm.check()  # arrived as a trial's training ended: stopped all the same
        except KeyboardInterrupt as exc:
            # Queued now, so a worker still running picks the trial up, not only a rerun.
            with workers_lock(study_dir):
                requeue_interrupted(study)
            if sigterm.received and not isinstance(exc, SearchInterrupted):
                raise SearchInterrupted(signal.SIGTERM) from exc
            raise
        finally:
            write_summary(study)
            _report_running(study, settings)
    summary = json.loads(summary_path.read_text())
    print_summary(summary, summary_path)
    return summary
