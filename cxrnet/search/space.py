"""The search space and settings of ``cxrnet-search``: its ``hparams_search`` node, checked."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf

from cxrnet.search.storage import check_storage_setting

Choice = None | bool | int | float | str

KINDS = ("float", "int", "categorical")
SPEC_FIELDS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}
SIGNIFICANT_DIGITS = 4


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


def round_float(value: Choice, digits: int = SIGNIFICANT_DIGITS) -> Choice:
    """A sampled float to a few significant digits: 0.00315, not 0.0031467304061660057.

    Trials are run with the rounded value, so configs, folders and reports stay readable; the
    sampler keeps its exact draw, which is closer to it than any effect it could measure.
    """
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.{digits}g}")
    return value


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
        storage = raw.get("storage")
        check_storage_setting(storage)
        return cls(
            study_name=name,
            n_trials=n_trials,
            space=space,
            sampler=raw.get("sampler"),
            pruner=raw.get("pruner"),
            storage=storage,
            timeout_s=raw.get("timeout_s"),
            heartbeat_s=raw.get("heartbeat_s"),
            grace_s=raw.get("grace_s"),
            enqueue=enqueue,
        )
