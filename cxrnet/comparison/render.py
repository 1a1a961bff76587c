"""The comparison as people read it: a terminal table that fits, CSV and Markdown files."""

from __future__ import annotations

import csv
import os
import shutil
import sys
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TextIO

from cxrnet.comparison.stat import LEVEL, Stat
from cxrnet.comparison.summary import Summary
from cxrnet.runs import Value
from cxrnet.runs.results import RunResult

CSV_NAME, MARKDOWN_NAME, PLOT_NAME = "comparison.csv", "comparison.md", "comparison.png"
# Shown for a key a job neither overrides nor has as a scalar in its saved config.
UNSET = "(default)"
# Three decimals, as results are usually quoted; the CSV keeps ten significant digits.
DIGITS = 3
# The terminal and the compact table show the sort metric and these, where the jobs have them;
# the files show all. At each run's own threshold: at 0.5 a run's calls can all be one class.
PREFERRED_METRICS = (
    "val/auroc",
    "val/f1_at_threshold",
    "val/recall_at_threshold",
    "val/specificity_at_threshold",
    "test/auroc",
)
TERMINAL_METRICS = 5
MIN_KEY_WIDTH = 8
GAP = "  "


def format_cell(value: Value) -> str:
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"  # as Hydra spells it on the command line
    return str(value)


def format_stat(stat: Stat | None, n: int, digits: int = DIGITS) -> str:
    """``0.920 ± 0.020``; a lone run shows its value, a partial metric its own n."""
    if stat is None:
        return "–"
    text = stat.text(digits)
    if stat.n != n:
        text += f" (n={stat.n})"
    return text


def _first_line(text: str | None, limit: int = 200) -> str:
    lines = (text or "").strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _sort_arrow(summary: Summary) -> str:
    return "↑" if summary.ascending else "↓"


def _header(summary: Summary, metric: str) -> str:
    return f"{metric} {_sort_arrow(summary)}" if metric == summary.sort else metric


def _display_rows(summary: Summary, metrics: Sequence[str] | None = None) -> list[list[str]]:
    """Each row's cells as shown: swept values, n, then ``mean ± std`` per metric (every
    compared metric, or ``metrics``)."""
    return [
        [format_cell(row.config[key]) for key in summary.keys]
        + [str(row.n)]
        + [format_stat(row.stats.get(m), row.n) for m in (metrics or summary.metrics)]
        for row in summary.rows
    ]


def terminal_metrics(summary: Summary, requested: Sequence[str] | None = None) -> list[str]:
    """The few metrics the terminal table shows: the sort metric first, then ``requested``
    (names or globs) or the preferred ones the jobs have."""
    chosen = [summary.sort]
    if requested:
        for pattern in requested:
            matches = [m for m in summary.metrics if fnmatchcase(m, pattern)]
            if not matches:
                raise ValueError(
                    f"--show {pattern!r} matches none of the compared metrics: "
                    f"{', '.join(summary.metrics)}"
                )
            chosen += [m for m in matches if m not in chosen]
        return chosen
    for metric in (*PREFERRED_METRICS, *summary.metrics):
        if len(chosen) >= TERMINAL_METRICS:
            break
        # A metric at 0.5 gives way to its twin at the run's own threshold.
        if f"{metric}_at_threshold" in summary.metrics:
            continue
        if metric in summary.metrics and metric not in chosen:
            chosen.append(metric)
    return chosen


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def table_lines(
    summary: Summary, metrics: Sequence[str], width: int | None = None
) -> tuple[list[str], list[str]]:
    """The table as plain lines fitting ``width`` characters (None: no limit), and the metrics
    left out to fit. Metric columns go from the right first (the sort metric stays), then the
    swept keys' cells are shortened, never below ``MIN_KEY_WIDTH``."""
    keys = list(summary.keys)
    header = [*keys, "n", *(_header(summary, m) for m in metrics)]
    rows = _display_rows(summary, metrics)
    widths = [max(len(cells[i]) for cells in [header, *rows]) for i in range(len(header))]
    shown = len(header)
    first_metric = len(keys) + 1

    def total(count: int) -> int:
        return sum(widths[:count]) + len(GAP) * (count - 1)

    while width is not None and total(shown) > width and shown > first_metric + 1:
        shown -= 1
    while width is not None and total(shown) > width:
        widest = max(range(len(keys)), key=lambda i: widths[i], default=None)
        if widest is None or widths[widest] <= MIN_KEY_WIDTH:
            break
        widths[widest] -= min(total(shown) - width, widths[widest] - MIN_KEY_WIDTH)

    def line(cells: list[str]) -> str:
        parts = [
            _clip(cell, w).ljust(w) if i < len(keys) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(cells[:shown], widths, strict=False))
        ]
        return GAP.join(parts).rstrip()

    lines = [line(header), GAP.join("-" * w for w in widths[:shown])]
    lines += [line(cells) for cells in rows]
    return lines, list(metrics[shown - first_metric :])


def _output_width(stream: TextIO) -> int | None:
    """The terminal's width; None (no limit) for a pipe or a Slurm log, unless COLUMNS says."""
    if stream.isatty():
        return shutil.get_terminal_size().columns
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() else None


def ranking_note(summary: Summary) -> str | None:
    """What the order of the two best configurations is worth on the sort metric: a sentence
    when their intervals overlap or one has none; None when they are apart (or one row)."""
    if len(summary.rows) < 2:
        return None
    first, second = (row.stats.get(summary.sort) for row in summary.rows[:2])
    if first is None or second is None:
        return None
    overlap = first.overlaps(second)
    if overlap is None:
        return (
            f"The two best configurations on {summary.sort} ({first.text()} and "
            f"{second.text()}) have no interval to compare (single runs that stored none): "
            "their order may be noise."
        )
    if not overlap:
        return None
    return (
        f"The two best configurations' intervals on {summary.sort} overlap ({_span(first)} and "
        f"{_span(second)}): their order is not evidence that one is better. Repeat them "
        "over seeds, or compare on more validation films."
    )


def _span(stat: Stat) -> str:
    return f"{stat.low:.{DIGITS}f}-{stat.high:.{DIGITS}f}"


def print_summary(
    summary: Summary, metrics: Sequence[str] | None = None, stream: TextIO | None = None
) -> None:
    stream = stream or sys.stdout
    shown = terminal_metrics(summary, metrics)
    lines, hidden = table_lines(summary, shown, _output_width(stream))
    print(
        f"{len(summary.rows)} configurations from {summary.n_completed} completed jobs, "
        f"sorted by {summary.sort} {_sort_arrow(summary)}",
        file=stream,
    )
    print("\n".join(lines), file=stream)
    more = len(summary.metrics) - len(shown) + len(hidden)
    if more:
        print(f"(+{more} more metrics in the CSV and Markdown files; --show picks)", file=stream)
    note = ranking_note(summary)
    if note:
        print(note, file=stream)
    print_problems(summary.problems, stream)


def print_problems(problems: Sequence[RunResult], stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    if not problems:
        return
    print(f"\n{len(problems)} failed or unfinished jobs (not in the means):", file=stream)
    for run in problems:
        print(f"  {run.path}  {run.status}  {_first_line(run.error)}", file=stream)


def _relative(path: Path, start: Path) -> str:
    try:
        return os.path.relpath(path, start)
    except ValueError:  # another drive on Windows
        return str(path)


def _csv_number(value: float) -> str:
    # Ten significant digits: 0.92 rather than 0.9199999999999999, far below any metric's noise.
    return f"{value:.10g}"


def write_csv(summary: Summary, path: Path) -> Path:
    """One row per configuration; full-precision means, std empty where n == 1."""
    header = [*summary.keys, "n"]
    for metric in summary.metrics:
        header += [f"{metric}_mean", f"{metric}_std", f"{metric}_low", f"{metric}_high"]
    header.append("jobs")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in summary.rows:
            cells: list[object] = [format_cell(row.config[key]) for key in summary.keys]
            cells.append(row.n)
            for metric in summary.metrics:
                stat = row.stats.get(metric)
                cells.append("" if stat is None else _csv_number(stat.mean))
                cells.append("" if stat is None or stat.std is None else _csv_number(stat.std))
                for end in ("low", "high"):
                    value = None if stat is None else getattr(stat, end)
                    cells.append("" if value is None else _csv_number(value))
            cells.append(";".join(_relative(job, path.parent) for job in row.runs))
            writer.writerow(cells)
    return path


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], right_from: int) -> list[str]:
    align = ["---" if i < right_from else "--:" for i in range(len(header))]
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(summary: Summary, out_dir: Path, plot_name: str = PLOT_NAME) -> str:
    folded = ", ".join(f"`{key}`" for key in summary.fold_keys) or "nothing"
    order = "ascending" if summary.ascending else "descending"
    lines = [
        "# Sweep comparison",
        "",
        f"{summary.n_completed} completed jobs in {len(summary.rows)} configurations, sorted by "
        f"`{summary.sort}` ({order}). Cells are mean ± sample std over the jobs that differ only "
        f"in {folded} (n counts them); a single run shows its value and its own "
        f"{round(LEVEL * 100)}% bootstrap interval [low, high] where its metrics.json has one.",
        "",
    ]
    note = ranking_note(summary)
    if note:
        lines += [f"**{note}**", ""]
    compact = terminal_metrics(summary)
    lines += _md_table(
        [*summary.keys, "n", *(_header(summary, m) for m in compact)],
        _display_rows(summary, compact),
        right_from=len(summary.keys),
    )
    lines += ["", "## Every metric", ""]
    header = [*summary.keys, "n", *(_header(summary, m) for m in summary.metrics)]
    lines += _md_table(header, _display_rows(summary), right_from=len(summary.keys))
    lines += ["", f"![{summary.sort} against each swept key]({plot_name})", ""]
    if summary.problems:
        lines += [f"## Failed or unfinished jobs ({len(summary.problems)})", ""]
        problem_rows = [
            [f"`{_relative(run.path, out_dir)}`", run.status, _first_line(run.error)]
            for run in summary.problems
        ]
        lines += _md_table(["job", "status", "error"], problem_rows, right_from=3)
        lines.append("")
    return "\n".join(lines)
