"""Completed jobs grouped into configurations, repeats folded into mean ± std and n."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from cxrnet.comparison.stat import Stat, finite_stat
from cxrnet.runs import Value
from cxrnet.runs.results import RunResult

# Runs that differ only in these keys are repeats of one configuration.
DEFAULT_FOLD_KEYS = ("seed", "data.split_seed")
DEFAULT_METRIC_PREFIXES = ("val/", "test/")
# The ends of the bootstrap interval a run stores beside a metric (cxrnet.evaluation.report).
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"


@dataclass(frozen=True)
class Row:
    """One configuration: its swept values, its completed jobs and a Stat per metric."""

    config: dict[str, Value]
    stats: dict[str, Stat]
    runs: tuple[Path, ...]

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class Summary:
    keys: tuple[str, ...]
    metrics: tuple[str, ...]
    sort: str
    ascending: bool
    rows: tuple[Row, ...]
    problems: tuple[RunResult, ...]
    fold_keys: tuple[str, ...] = DEFAULT_FOLD_KEYS

    @property
    def n_completed(self) -> int:
        return sum(row.n for row in self.rows)


def value_sort_key(value: Value) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (2, 0.0, "") if value is None else (1, 0.0, str(value))


def swept_keys(runs: Sequence[RunResult], fold_keys: Iterable[str]) -> tuple[str, ...]:
    """Override keys whose value differs between ``runs``, in command-line order."""
    fold = set(fold_keys)
    candidates = dict.fromkeys(key for run in runs for key in run.overrides if key not in fold)
    return tuple(key for key in candidates if len({run.value(key) for run in runs}) > 1)


def _available_metrics(runs: Sequence[RunResult]) -> list[str]:
    return sorted({name for run in runs for name in run.metrics})


def _select_metrics(requested: Sequence[str] | None, available: list[str]) -> list[str]:
    if not requested:
        # A metric's interval ends are shown with it, not as columns of their own.
        ranked = [
            m
            for m in available
            if m.startswith(DEFAULT_METRIC_PREFIXES) and not m.endswith((CI_LOW, CI_HIGH))
        ]
        rank = {prefix: i for i, prefix in enumerate(DEFAULT_METRIC_PREFIXES)}
        ranked.sort(key=lambda m: (rank[m.split("/")[0] + "/"], m))
        return ranked or available
    chosen: list[str] = []
    for pattern in requested:
        matches = [m for m in available if fnmatchcase(m, pattern)]
        if not matches:
            raise ValueError(_unknown_metric(pattern, available))
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def _unknown_metric(name: str, available: list[str]) -> str:
    return (
        f"metric {name!r} is in no completed job's metrics.json; "
        f"available: {', '.join(available) or 'none'}"
    )


def _default_sort(runs: Sequence[RunResult], chosen: list[str], explicit: bool) -> str:
    if not explicit:
        monitors = Counter(run.monitor for run in runs if run.monitor in chosen)
        if monitors:
            return str(monitors.most_common(1)[0][0])
    return chosen[0]


def _make_row(config: dict[str, Value], members: list[RunResult], metrics: list[str]) -> Row:
    stats = {}
    for metric in metrics:
        values = [run.metrics[metric] for run in members if metric in run.metrics]
        stat = finite_stat(values, _own_interval(members[0], metric) if len(values) == 1 else None)
        if stat is not None:
            stats[metric] = stat
    return Row(config, stats, tuple(run.path for run in members))


def _own_interval(run: RunResult, metric: str) -> tuple[float, float] | None:
    """The bootstrap interval a run stored beside ``metric`` (``<metric>_ci_low/_ci_high``)."""
    low, high = run.metrics.get(f"{metric}{CI_LOW}"), run.metrics.get(f"{metric}{CI_HIGH}")
    return None if low is None or high is None else (low, high)


def summarize(
    runs: Sequence[RunResult],
    metrics: Sequence[str] | None = None,
    sort: str | None = None,
    fold_keys: Iterable[str] = DEFAULT_FOLD_KEYS,
    ascending: bool = False,
) -> Summary:
    """Completed ``runs`` grouped into configurations, sorted by ``sort`` (best first).

    ``metrics`` are names or glob patterns (``val/*``); by default every ``val/`` and ``test/``
    metric. ``sort`` defaults to the jobs' monitored metric, or the first of ``metrics``; it is
    added to the metrics when missing. Raises ValueError when nothing completed or a metric
    named is in no job.
    """
    completed = [run for run in runs if run.completed]
    if not completed:
        raise ValueError(f"none of the {len(runs)} jobs completed; nothing to compare")
    fold_keys = tuple(fold_keys)
    available = _available_metrics(completed)
    chosen = _select_metrics(metrics, available)
    if not chosen:
        raise ValueError("the completed jobs' metrics.json files hold no metrics")
    sort = sort or _default_sort(completed, chosen, explicit=bool(metrics))
    if sort not in available:
        raise ValueError(_unknown_metric(sort, available))
    if sort not in chosen:
        chosen.insert(0, sort)

    keys = swept_keys(completed, fold_keys)
    groups: dict[tuple[Value, ...], list[RunResult]] = {}
    for run in completed:
        groups.setdefault(tuple(run.value(key) for key in keys), []).append(run)
    rows = [
        _make_row(dict(zip(keys, values, strict=True)), members, chosen)
        for values, members in groups.items()
    ]

    def order(row: Row) -> tuple[bool, float, list[tuple[int, float, str]]]:
        stat = row.stats.get(sort)
        score = 0.0 if stat is None else (stat.mean if ascending else -stat.mean)
        # Rows without the sort metric go last; ties keep a stable order by their values.
        return (stat is None, score, [value_sort_key(v) for v in row.config.values()])

    rows.sort(key=order)
    problems = tuple(run for run in runs if not run.completed)
    return Summary(keys, tuple(chosen), sort, ascending, tuple(rows), problems, fold_keys)
