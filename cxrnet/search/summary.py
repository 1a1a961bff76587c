"""What ``study.json`` holds and what ``cxrnet-search`` prints at the end."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from cxrnet.runs import format_override_value, format_overrides


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
        "worker": trial.user_attrs.get("worker"),
        # The trial this one runs again: after Ctrl-C or SIGTERM (ours), or a dead worker
        # (Optuna's heartbeat retry, which copies the user attributes, so it is checked first).
        "retry_of": trial.system_attrs.get("failed_trial", trial.user_attrs.get("retry_of")),
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
            print(f"  {key}={format_override_value(value)}")
        print(f"  run folder: {best['run_dir']}")
        print(f"  train and test it: {best['command']}")
    print(f"summary: {summary_path}")
