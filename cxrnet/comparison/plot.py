"""One plot panel per swept key: the sort metric with its interval against the key's values."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from cxrnet.comparison.render import format_cell
from cxrnet.comparison.stat import LEVEL, Stat
from cxrnet.comparison.summary import Row, Summary, value_sort_key
from cxrnet.runs import Value

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plot_key(ax: Axes, summary: Summary, key: str) -> None:
    plotted = [row for row in summary.rows if summary.sort in row.stats]
    numeric = all(_is_number(row.config[key]) for row in summary.rows)
    categories = sorted({row.config[key] for row in plotted}, key=value_sort_key)
    # Each combination of the other swept keys is one series, so no point hides another's.
    others = [k for k in summary.keys if k != key]
    series: dict[tuple[Value, ...], list[Row]] = {}
    for row in plotted:
        series.setdefault(tuple(row.config[k] for k in others), []).append(row)
    names = sorted(series, key=lambda values: [value_sort_key(v) for v in values])
    for index, name in enumerate(names):
        members = sorted(series[name], key=lambda row: value_sort_key(row.config[key]))
        if numeric:
            xs = [float(row.config[key]) for row in members]  # type: ignore[arg-type]
        else:
            dodge = 0.3 * (index / (len(names) - 1) - 0.5) if len(names) > 1 else 0.0
            xs = [categories.index(row.config[key]) + dodge for row in members]
        stats = [row.stats[summary.sort] for row in members]
        ax.errorbar(
            xs,
            [s.mean for s in stats],
            yerr=_bars(stats),
            marker="o",
            capsize=3,
            linestyle="-" if numeric else "none",
            label=", ".join(f"{k}={format_cell(v)}" for k, v in zip(others, name, strict=True)),
        )
    if numeric:
        values = [float(row.config[key]) for row in plotted]  # type: ignore[arg-type]
        if values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")  # learning rates and the like span decades
    else:
        labels = [format_cell(c) for c in categories]
        rotation = 20 if labels and max(map(len, labels)) > 8 else 0
        ax.set_xticks(range(len(categories)), labels, rotation=rotation)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(key)
    _honest_axis(ax, summary)
    ax.grid(alpha=0.3)
    if 1 < len(names) <= 12:
        ax.legend(fontsize="small")


def build_figure(summary: Summary) -> Figure:
    """The sort metric (mean ± std) against each swept key, one panel per key."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    # A bare Figure on the Agg canvas: no pyplot, so no global backend or figure state.
    panels = max(len(summary.keys), 1)
    cols = min(panels, 3)
    rows = math.ceil(panels / cols)
    fig = Figure(figsize=(5.0 * cols, 3.8 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, key in zip(axes, summary.keys, strict=False):
        _plot_key(ax, summary, key)
    if not summary.keys:  # one configuration (or seeds only): still show its spread
        stats = [row.stats[summary.sort] for row in summary.rows if summary.sort in row.stats]
        axes[0].errorbar(
            range(len(stats)),
            [s.mean for s in stats],
            yerr=_bars(stats),
            marker="o",
            capsize=3,
            linestyle="none",
        )
        axes[0].set_xticks(range(len(stats)), ["all jobs"] * len(stats))
        _honest_axis(axes[0], summary)
    for ax in axes[panels:]:
        ax.set_visible(False)
    over = ", ".join(summary.fold_keys) or "repeats"
    fig.suptitle(
        f"{summary.sort}: mean and {round(LEVEL * 100)}% interval (t over {over}; "
        "a single run: its bootstrap interval)"
    )
    return fig


def _bars(stats: Sequence[Stat]) -> np.ndarray:
    """Error bars below and above each mean: its interval, or nothing where it has none."""
    below = [s.mean - s.low if s.low is not None else 0.0 for s in stats]
    above = [s.high - s.mean if s.high is not None else 0.0 for s in stats]
    return np.array([below, above])


def _honest_axis(ax: Axes, summary: Summary) -> None:
    """The sort metric's axis from 0 to 1 where it is a rate or an area (every value and interval
    end within them): a zoomed axis makes a gap of 0.02 look like a result."""
    ax.set_ylabel(summary.sort)
    ends = [
        value
        for row in summary.rows
        if (stat := row.stats.get(summary.sort)) is not None
        for value in (stat.mean, stat.low, stat.high)
        if value is not None
    ]
    if ends and min(ends) >= 0.0 and max(ends) <= 1.0:
        ax.set_ylim(0.0, 1.0)
