"""``cxrnet-search``: an Optuna study over the train config, one cxrnet-train run per trial.

    cxrnet-search data.root=/data/chest_xray trainer.max_epochs=10 hparams_search.n_trials=40

Each trial samples the keys declared in ``conf/hparams_search/<name>.yaml`` (a float, int or
categorical distribution per train-config key), composes the train config from the user's
overrides plus the sampled ones, and trains it with ``cxrnet.cli.train.run`` into its own folder
``<study folder>/trials/<number>``, which holds ``.hydra/overrides.yaml`` and ``metrics.json`` like
a multirun job, so ``cxrnet-compare <study folder>`` tabulates the study. The objective is the
validation metric ``monitor`` of the best epoch; trials never test (``test=false``).

- Pruning: a Lightning callback reports ``monitor`` to the trial after every validation epoch
  and stops the trial when the pruner (MedianPruner by default) says so; state PRUNED.
- Failures: a trial that raises (a non-finite training loss, out of memory, a bad combination
  of settings) is recorded as FAIL with its error and the search goes on. A NaN loss does not
  raise by itself (training "completes" with a meaningless score), so a callback checks every
  training loss; ``detect_anomaly`` would, at several times the cost of a step.
- Resuming: the study lives in SQLite in the study folder, named by the study, not the time;
  running the same command again loads it and runs trials until ``n_trials`` have finished. A
  trial cut short by Ctrl-C is run again first; one whose process died (killed, preempted) is
  failed after a heartbeat grace period and retried once.

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
import re
import sys
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import optuna
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from omegaconf import DictConfig, OmegaConf, open_dict
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from cxrnet.cli.hydra_support import CONFIG_PATH, HYDRA_VERSION, register_resolvers, write_metrics
from cxrnet.cli.train import run as run_training

if TYPE_CHECKING:
    import lightning as L

log = logging.getLogger(__name__)

Choice = None | bool | int | float | str
ComposeFn = Callable[[Sequence[str]], DictConfig]

KINDS = ("float", "int", "categorical")
SPEC_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
INTERRUPTED = "interrupted"
TRIALS_DIR = "trials"
SUMMARY_NAME = "study.json"
DIRECTIONS = {"max": "maximize", "min": "minimize"}
SIGNIFICANT_DIGITS = 4
# Override keys that configure the search or Hydra itself, not the trained model.
_NOT_TRAIN_KEYS = ("hparams_search", "hydra")


# --------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class ParamSpec:
    """One searched train-config key and its distribution."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Choice, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Choice:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(
                self.key, int(self.low), int(self.high), step=step, log=self.log
            )
        return trial.suggest_categorical(self.key, list(self.choices))


def _spec_error(key: str, message: str) -> ValueError:
    return ValueError(f"hparams_search.space.{key}: {message}")


def _number(key: str, spec: Mapping[str, Any], name: str) -> float:
    value = spec.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _spec_error(key, f"'{name}' must be a number, got {value!r}")
    return value


def parse_spec(key: str, spec: Mapping[str, Any]) -> ParamSpec:
    """A ``{type: ..., ...}`` leaf as a ParamSpec; errors name the key and the fix."""
    kind = spec.get("type")
    if kind not in KINDS:
        raise _spec_error(key, f"type must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = set(spec) - SPEC_FIELDS[kind]
    if unknown:
        allowed = ", ".join(sorted(SPEC_FIELDS[kind]))
        raise _spec_error(key, f"unknown field(s) {sorted(unknown)} for {kind}; allowed: {allowed}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, Sequence) or isinstance(choices, str) or not choices:
            raise _spec_error(key, f"'choices' must be a non-empty list, got {choices!r}")
        for choice in choices:
            if choice is not None and not isinstance(choice, bool | int | float | str):
                raise _spec_error(
                    key, f"choices must be scalars (Optuna stores them), got {choice!r}"
                )
        if len(set(map(repr, choices))) != len(choices):
            raise _spec_error(key, f"'choices' has duplicates: {list(choices)}")
        return ParamSpec(key, kind, choices=tuple(choices))

    low, high = _number(key, spec, "low"), _number(key, spec, "high")
    log_scale = bool(spec.get("log", False))
    step = spec.get("step")
    if low > high:
        raise _spec_error(key, f"low must be <= high, got low={low}, high={high}")
    if log_scale and low <= 0:
        raise _spec_error(key, f"a log scale needs low > 0, got low={low}")
    if log_scale and step is not None:
        raise _spec_error(key, "'step' and 'log: true' cannot be combined (Optuna rejects it)")
    if step is not None and (isinstance(step, bool) or not step > 0):
        raise _spec_error(key, f"'step' must be a positive number, got {step!r}")
    if kind == "int" and not all(float(v).is_integer() for v in (low, high, step or 1)):
        raise _spec_error(key, f"an int range needs whole numbers, got {low}..{high} step {step}")
    return ParamSpec(key, kind, low, high, log_scale, step)


def parse_space(space: Mapping[str, Any], prefix: str = "") -> tuple[ParamSpec, ...]:
    """Nested mappings down to ``{type: ...}`` leaves, keyed by their dotted train-config key."""
    specs: list[ParamSpec] = []
    for name, node in space.items():
        key = f"{prefix}{name}"
        if not isinstance(node, Mapping):
            raise _spec_error(key, f"expected {{type: float|int|categorical, ...}}, got {node!r}")
        if "type" in node:
            specs.append(parse_spec(key, node))
        else:
            specs.extend(parse_space(node, prefix=f"{key}."))
    if not prefix and not specs:
        raise ValueError("hparams_search.space is empty: declare at least one key to search")
    return tuple(specs)


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"net": {"dropout": 0.3}}}`` as ``{"model.net.dropout": 0.3}``."""
    flat: dict[str, Any] = {}
    for name, value in params.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat |= flatten(value, prefix=f"{key}.")
        else:
            flat[key] = value
    return flat


_BARE_STRING = re.compile(r"[A-Za-z_][\w\-./]*")
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def format_value(value: Choice) -> str:
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


def format_overrides(params: Mapping[str, Choice]) -> list[str]:
    return [f"{key}={format_value(value)}" for key, value in params.items()]


def round_float(value: Choice, digits: int = SIGNIFICANT_DIGITS) -> Choice:
    """A sampled float to a few significant digits: 0.00315, not 0.0031467304061660057.

    Trials are run with the rounded value, so configs, folders and reports stay readable; the
    sampler keeps its exact draw, which is closer to it than any effect it could measure.
    """
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    return value


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SearchSettings:
    """The ``hparams_search`` node of conf/search.yaml, checked."""

    study_name: str
    n_trials: int
    space: tuple[ParamSpec, ...]
    sampler: dict[str, Any] | None = None
    pruner: dict[str, Any] | None = None
    storage: str | None = None
    timeout_s: float | None = None
    heartbeat_s: int | None = 60
    grace_s: int | None = None
    enqueue: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def from_config(cls, node: DictConfig | Mapping[str, Any]) -> SearchSettings:
        raw = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
        raw = dict(raw)
        name = str(raw.get("study_name") or "")
        if not re.fullmatch(r"[\w.\-]+", name):
            raise ValueError(
                f"hparams_search.study_name names the study folder: use letters, digits, '_', "
                f"'-' or '.', got {name!r}"
            )
        n_trials = raw.get("n_trials")
        if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
            raise ValueError(
                f"hparams_search.n_trials must be a positive integer, got {n_trials!r}"
            )
        space = parse_space(raw.get("space") or {})
        keys = {spec.key for spec in space}
        enqueue = tuple(flatten(params) for params in raw.get("enqueue") or ())
        for params in enqueue:
            unknown = sorted(set(params) - keys)
            if unknown:
                raise ValueError(
                    f"hparams_search.enqueue sets {unknown}, which the search space does not "
                    f"declare; searched keys: {sorted(keys)}"
                )
        return cls(
            study_name=name,
            n_trials=n_trials,
            space=space,
            sampler=raw.get("sampler"),
            pruner=raw.get("pruner"),
            storage=raw.get("storage"),
            timeout_s=raw.get("timeout_s"),
            heartbeat_s=raw.get("heartbeat_s"),
            grace_s=raw.get("grace_s"),
            enqueue=enqueue,
        )

    def storage_url(self, study_dir: Path) -> str:
        return self.storage or f"sqlite:///{(study_dir / 'study.db').resolve()}"


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


# --------------------------------------------------------------------------- Lightning callbacks


class FailOnNonFinite(Callback):
    """Fail the run as soon as a training loss (or the monitored metric) is NaN or infinite.

    A diverged run otherwise trains on NaN weights to the end and reports a score that looks
    real (an AUROC of 0 or 0.5); in a search it must be a failed trial instead.
    """

    def __init__(self, monitor: str | None = None) -> None:
        self.monitor = monitor

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss).all()):
            raise FloatingPointError(
                f"the training loss is {loss.detach().float().mean().item()} at epoch "
                f"{trainer.current_epoch}, batch {batch_idx}: training diverged (a lower "
                "model.optimizer.lr usually helps)"
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.monitor or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is not None and not math.isfinite(float(value)):
            raise FloatingPointError(
                f"{self.monitor} is {float(value)} after epoch {trainer.current_epoch}: "
                "the search cannot rank this trial"
            )


class ReportToTrial(Callback):
    """Report ``monitor`` to the Optuna trial after each training epoch's validation; prune."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Only while fitting: the validation of the best checkpoint afterwards is not an epoch.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            return  # the LightningModule itself raises for an unknown monitor
        epoch = trainer.current_epoch
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {epoch}: {self.monitor}={float(value):.4f} "
                "is worse than the pruner's bar at this epoch"
            )


# --------------------------------------------------------------------------- objective


def _override_key(override: str) -> str:
    return override.lstrip("~+").partition("=")[0].strip()


def _overrides_group(override: str, group: str) -> bool:
    key = _override_key(override)
    return key == group or key.startswith((f"{group}.", f"{group}/"))


def _is_train_override(override: str) -> bool:
    return not any(_overrides_group(override, group) for group in _NOT_TRAIN_KEYS)


def _key_exists(cfg: DictConfig, key: str) -> bool:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return False
        node = node._get_node(part)
    return True


def _release_memory() -> None:
    # An out-of-memory trial must not leave the next one short of (GPU) memory.
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _mark_pruned(run_dir: Path) -> None:
    """train.run wrote status=failed for the TrialPruned it saw; a pruned run did not fail."""
    path = run_dir / "metrics.json"
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError):
        payload = {"run_dir": str(run_dir)}
    payload["status"] = "pruned"
    write_metrics(path, payload)


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
        return [o for o in self.user_overrides if not _overrides_group(o, "hydra")]

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
        try:
            cfg = self.trial_config(params, run_dir)
            # What Hydra writes for a job, so cxrnet-compare reads a trial as a multirun job.
            hydra_dir = run_dir / ".hydra"
            hydra_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, hydra_dir / "config.yaml")
            OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
            callbacks = [FailOnNonFinite(self.monitor), ReportToTrial(trial, self.monitor)]
            result = run_training(cfg, callbacks)
            value = result["metrics"].get(self.monitor)
            if value is None:
                raise KeyError(f"{self.monitor} is not among the run's metrics {result['metrics']}")
            if not math.isfinite(value):
                raise FloatingPointError(f"{self.monitor} is {value}: the trial cannot be ranked")
            return float(value)
        except optuna.TrialPruned:
            _mark_pruned(run_dir)
            raise
        except (KeyboardInterrupt, SystemExit) as exc:
            # Lightning turns Ctrl-C into SystemExit; Optuna only records KeyboardInterrupt
            # (as FAIL), and would leave the trial RUNNING forever otherwise.
            trial.set_user_attr("error", INTERRUPTED)
            raise KeyboardInterrupt("search interrupted") from exc
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            raise
        finally:
            _release_memory()


# --------------------------------------------------------------------------- the study


def _check_trial_folders(study: optuna.Study, trials_dir: Path, url: str) -> None:
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


def _check_search_inputs(
    settings: SearchSettings, train_overrides: Sequence[str], probe: DictConfig
) -> None:
    searched = {spec.key for spec in settings.space}
    clashes = sorted(searched & {_override_key(o) for o in train_overrides})
    if clashes:
        raise ValueError(
            f"{clashes} are both set on the command line and searched; drop the override or "
            f"stop searching the key, e.g. ~hparams_search.space.{clashes[0]}"
        )
    missing = [key for key in sorted(searched) if not _key_exists(probe, key)]
    if missing:
        raise ValueError(
            f"hparams_search.space declares {missing}, which the train config does not have "
            "(a typo, or a key that needs a different model/data config)"
        )


def summarize_study(
    study: optuna.Study, monitor: str, storage_url: str, train_overrides: Sequence[str]
) -> dict[str, Any]:
    """What study.json holds: trial states, every trial, and the best one with its command."""
    trials = study.get_trials(deepcopy=False)
    rows = [_trial_row(trial) for trial in trials]
    best = None
    if any(trial.state == TrialState.COMPLETE for trial in trials):
        trial = study.best_trial
        overrides = trial.user_attrs.get("overrides") or format_overrides(trial.params)
        best = {
            "number": trial.number,
            "value": trial.value,
            "params": trial.user_attrs.get("values", trial.params),
            "run_dir": trial.user_attrs.get("run_dir"),
            "overrides": overrides,
            "command": " ".join(["cxrnet-train", *overrides]),
        }
    counts = Counter(trial.state.name.lower() for trial in trials)
    return {
        "study_name": study.study_name,
        "storage": storage_url,
        "direction": study.direction.name.lower(),
        "monitor": monitor,
        "n_trials": len(trials),
        "states": dict(sorted(counts.items())),
        "best": best,
        "trials": rows,
        "train_overrides": list(train_overrides),
    }


def _trial_row(trial: FrozenTrial) -> dict[str, Any]:
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "params": trial.user_attrs.get("values", trial.params),
        "run_dir": trial.user_attrs.get("run_dir"),
        "error": trial.user_attrs.get("error"),
        "last_epoch": max(trial.intermediate_values, default=None),
        "duration_s": None if trial.duration is None else round(trial.duration.total_seconds(), 1),
    }


def print_summary(summary: Mapping[str, Any], summary_path: Path) -> None:
    states = ", ".join(f"{n} {state}" for state, n in summary["states"].items()) or "none run"
    print(f"study {summary['study_name']}: {summary['n_trials']} trials ({states})")
    best = summary["best"]
    if best is None:
        print("no trial completed yet")
    else:
        print(f"best: trial {best['number']}, {summary['monitor']}={best['value']:.4f}")
        for key, value in best["params"].items():
            print(f"  {key}={format_value(value)}")
        print(f"  run folder: {best['run_dir']}")
        print(f"  train and test it: {best['command']}")
    print(f"summary: {summary_path}")


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
    direction = DIRECTIONS.get(str(cfg.monitor_mode))
    if direction is None:
        raise ValueError(f"monitor_mode must be 'max' or 'min', got {cfg.monitor_mode!r}")
    objective = Objective(settings, study_dir, list(user_overrides), compose, monitor)
    train_overrides = objective.train_overrides
    # One composition up front: a bad override fails here, not once per trial.
    _check_search_inputs(settings, train_overrides, compose(objective.compose_overrides))

    study_dir.mkdir(parents=True, exist_ok=True)
    url = settings.storage_url(study_dir)
    summary_path = study_dir / SUMMARY_NAME

    def write_summary(study: optuna.Study, _trial: FrozenTrial | None = None) -> None:
        write_metrics(summary_path, summarize_study(study, monitor, url, train_overrides))

    with warnings.catch_warnings():
        # Heartbeats and retries are marked experimental; they are what makes resuming work.
        warnings.simplefilter("ignore", ExperimentalWarning)
        study = open_study(settings, direction, study_dir)
        _check_trial_folders(study, study_dir / TRIALS_DIR, url)
        requeued = requeue_interrupted(study)
        if requeued:
            log.info("trial(s) %s were interrupted: running them again first", requeued)
        for params in settings.enqueue:
            study.enqueue_trial(params, skip_if_exists=True)
        finished = count_finished(study)
        remaining = settings.n_trials - finished
        log.info(
            "study %s in %s: %d finished trial(s), %d to run",
            settings.study_name,
            url,
            finished,
            max(remaining, 0),
        )
        try:
            if remaining > 0:
                study.optimize(
                    objective,
                    n_trials=remaining,
                    timeout=settings.timeout_s,
                    catch=(Exception,),
                    # Other workers on the same storage count too: stop at n_trials in all.
                    callbacks=[StopAtNTrials(settings.n_trials), write_summary],
                    gc_after_trial=True,
                )
        finally:
            write_summary(study)
    summary = json.loads(summary_path.read_text())
    print_summary(summary, summary_path)
    return summary


# --------------------------------------------------------------------------- entry point


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="search")
def _hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    # Optuna's own lines ("Trial 3 finished with value ...") into Hydra's console and log file.
    optuna.logging.disable_default_handler()
    optuna.logging.enable_propagation()
    config_name = hydra_cfg.job.config_name

    def compose(overrides: Sequence[str]) -> DictConfig:
        return hydra.compose(config_name=config_name, overrides=list(overrides))

    summary = search(
        cfg, Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task), compose
    )
    best = summary["best"]
    return None if best is None else float(best["value"])


def main() -> None:
    register_resolvers()
    try:
        _hydra_main()
    except KeyboardInterrupt:
        print("search interrupted: run the same command again to resume it", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
