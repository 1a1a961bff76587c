"""Compare the jobs of one or more sweeps: a table, CSV, Markdown and one plot panel per swept key.

``cxrnet-compare multirun/2024-05-01/12-00-00`` finds every job folder below the given folders
(any folder holding ``.hydra/overrides.yaml`` or ``metrics.json``), groups the completed jobs by
the override values that differ between them, folds repeated seeds into mean ± std and n, and
writes ``comparison.csv``, ``comparison.md`` and ``comparison.png``. Failed and unfinished jobs
are listed, never averaged.

Plain argparse on purpose: this reads what the Hydra apps wrote and is not one itself.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

Value = str | int | float | bool | None

# Runs that differ only in these keys are repeats of one configuration.
DEFAULT_FOLD_KEYS = ("seed", "data.split_seed")
DEFAULT_METRIC_PREFIXES = ("val/", "test/")
COMPLETED = "completed"
UNFINISHED = "unfinished"
UNREADABLE = "unreadable"
CSV_NAME, MARKDOWN_NAME, PLOT_NAME = "comparison.csv", "comparison.md", "comparison.png"
# Shown for a key a job neither overrides nor has as a scalar in its saved config.
UNSET = "(default)"
# Three decimals, as results are usually quoted; the CSV keeps ten significant digits.
DIGITS = 3


# --------------------------------------------------------------------------- reading jobs


@dataclass(frozen=True)
class RunResult:
    """One job folder: its overrides, its final metrics and how it ended."""

    path: Path
    status: str
    overrides: dict[str, Value] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    monitor: str | None = None
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def completed(self) -> bool:
        return self.status == COMPLETED

    def value(self, key: str) -> Value:
        """The job's value for ``key``: its override, else the scalar in its saved config.

        Looking in the config lets a job that kept a default group with jobs that set the same
        value on the command line.
        """
        if key in self.overrides:
            return self.overrides[key]
        return _config_scalar(self.config, key)


def parse_value(text: str) -> Value:
    """An override's value as a number, bool or string, so ``1e-3`` and ``0.001`` compare equal."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_overrides(lines: Iterable[object]) -> dict[str, Value]:
    """``["+a.b=1", "model=x"]`` as ``{"a.b": 1, "model": "x"}``; Hydra's own keys are dropped."""
    parsed: dict[str, Value] = {}
    for line in lines:
        text = str(line).strip()
        if text.startswith("~"):
            parsed[text[1:].partition("=")[0]] = "(deleted)"
            continue
        key, sep, raw = text.lstrip("+").partition("=")
        key = key.strip()
        # hydra.* settings (output dirs, launcher) differ per job without being an experiment.
        if not sep or key == "hydra" or key.startswith(("hydra.", "hydra/")):
            continue
        parsed[key] = parse_value(raw)
    return parsed


def _config_scalar(config: Mapping[str, Any], dotted: str) -> Value:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if node is None:
        return "null"
    if isinstance(node, str):
        return parse_value(node)
    if isinstance(node, bool | int | float):
        return node
    return None  # a group's dict or a list: not comparable with an override string


def _read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text()) if path.is_file() else None


def _numeric_metrics(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping):
        return {}
    return {
        str(name): float(value)
        for name, value in raw.items()
        if isinstance(value, int | float) and not isinstance(value, bool)
    }


def read_run(job_dir: Path) -> RunResult:
    """The job in ``job_dir``; never raises for a broken job, which is reported instead."""
    hydra_dir = job_dir / ".hydra"
    try:
        raw_overrides = _read_yaml(hydra_dir / "overrides.yaml") or []
        if not isinstance(raw_overrides, list):
            raise ValueError(f"expected a YAML list, got {type(raw_overrides).__name__}")
        overrides = parse_overrides(raw_overrides)
        config = _read_yaml(hydra_dir / "config.yaml") or {}
    except (OSError, yaml.YAMLError, ValueError) as exc:
        return RunResult(job_dir, UNREADABLE, error=f"{hydra_dir} is unreadable: {exc}")
    config = config if isinstance(config, dict) else {}

    metrics_path = job_dir / "metrics.json"
    if not metrics_path.is_file():
        message = "no metrics.json: still running, or killed before it finished"
        return RunResult(job_dir, UNFINISHED, overrides, error=message, config=config)
    try:
        data = json.loads(metrics_path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        message = f"{metrics_path} is unreadable: {exc}"
        return RunResult(job_dir, UNREADABLE, overrides, error=message, config=config)
    error = data.get("error")
    monitor = data.get("monitor")
    return RunResult(
        path=job_dir,
        status=str(data.get("status", "unknown")),
        overrides=overrides,
        metrics=_numeric_metrics(data.get("metrics")),
        error=None if error is None else str(error),
        monitor=None if monitor is None else str(monitor),
        config=config,
    )


def _natural_key(path: Path) -> list[object]:
    # Job folders are numbered: 2/ before 10/.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]


def find_job_dirs(folder: Path | str) -> list[Path]:
    """Every job folder at or below ``folder``; a job's own subfolders are not searched."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"sweep folder {folder} does not exist or is not a folder; pass the folder that "
            "cxrnet-train -m wrote (e.g. multirun/<date>/<time>) or a single run's folder"
        )
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        here = Path(dirpath)
        if "metrics.json" in filenames or (here / ".hydra" / "overrides.yaml").is_file():
            found.append(here)
            dirnames.clear()
        else:
            dirnames[:] = [name for name in dirnames if not name.startswith(".")]
    return sorted(found, key=_natural_key)


def collect_runs(folders: Iterable[Path | str]) -> list[RunResult]:
    """All jobs below ``folders``, each once even when the folders overlap."""
    seen: set[Path] = set()
    runs: list[RunResult] = []
    for folder in folders:
        for job_dir in find_job_dirs(folder):
            if job_dir.resolve() not in seen:
                seen.add(job_dir.resolve())
                runs.append(read_run(job_dir))
    return runs


# --------------------------------------------------------------------------- summarizing


@dataclass(frozen=True)
class Stat:
    """A metric over the repeats of one configuration; std is the sample std (n - 1)."""

    mean: float
    std: float | None  # None for n == 1: one run says nothing about the spread
    n: int


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


def _value_sort_key(value: Value) -> tuple[int, float, str]:
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
        ranked = [m for m in available if m.startswith(DEFAULT_METRIC_PREFIXES)]
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


def _stat(values: list[float]) -> Stat | None:
    # A NaN metric (e.g. AUROC of a one-class split) would poison the mean; it lowers n instead.
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return None
    std = statistics.stdev(finite) if len(finite) > 1 else None
    return Stat(statistics.fmean(finite), std, len(finite))


def _make_row(config: dict[str, Value], members: list[RunResult], metrics: list[str]) -> Row:
    stats = {}
    for metric in metrics:
        stat = _stat([run.metrics[metric] for run in members if metric in run.metrics])
        if stat is not None:
            stats[metric] = stat
    return Row(config, stats, tuple(run.path for run in members))


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
        return (stat is None, score, [_value_sort_key(v) for v in row.config.values()])

    rows.sort(key=order)
    problems = tuple(run for run in runs if not run.completed)
    return Summary(keys, tuple(chosen), sort, ascending, tuple(rows), problems, fold_keys)


# --------------------------------------------------------------------------- formatting


def format_value(value: Value) -> str:
    if value is None:
        return UNSET
    if isinstance(value, bool):
        return "true" if value else "false"  # as Hydra spells it on the command line
    return str(value)


def format_stat(stat: Stat | None, n: int, digits: int = DIGITS) -> str:
    """``0.920 ± 0.020``; a lone run shows its value, a partial metric its own n."""
    if stat is None:
        return "–"
    text = f"{stat.mean:.{digits}f}"
    if stat.std is not None:
        text += f" ± {stat.std:.{digits}f}"
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


def _display_rows(summary: Summary) -> list[list[str]]:
    """Each row's cells as shown: swept values, n, then ``mean ± std`` per metric."""
    return [
        [format_value(row.config[key]) for key in summary.keys]
        + [str(row.n)]
        + [format_stat(row.stats.get(m), row.n) for m in summary.metrics]
        for row in summary.rows
    ]


def print_problems(problems: Sequence[RunResult], console: Console) -> None:
    if not problems:
        return
    title = f"{len(problems)} failed or unfinished jobs (not in the means)"
    table = Table(title=Text(title), box=box.SIMPLE_HEAD)
    for name in ("job", "status", "error"):
        table.add_column(name, overflow="fold")
    for run in problems:
        table.add_row(Text(str(run.path)), Text(run.status), Text(_first_line(run.error)))
    console.print(table)


def print_summary(summary: Summary, console: Console | None = None) -> None:
    console = console or Console()
    title = (
        f"{len(summary.rows)} configurations from {summary.n_completed} completed jobs, "
        f"sorted by {summary.sort} {_sort_arrow(summary)}"
    )
    table = Table(title=Text(title), box=box.SIMPLE_HEAD)
    rows = _display_rows(summary)
    for key in summary.keys:
        table.add_column(Text(key), overflow="fold")
    table.add_column("n", justify="right")
    first = len(summary.keys) + 1
    widths = [max(len(cells[i]) for cells in rows) for i in range(first, len(rows[0]))]
    # Squeeze the key columns first so "0.960 ± 0.017" stays on one line, unless the metrics
    # alone overflow the terminal: rich would then crop whole columns rather than wrap them.
    keep = sum(w + 3 for w in widths) + 10 * len(summary.keys) + 6 <= console.width
    for metric, width in zip(summary.metrics, widths, strict=True):
        table.add_column(
            Text(_header(summary, metric)), justify="right", min_width=width if keep else None
        )
    for cells in rows:
        table.add_row(*(Text(cell) for cell in cells))
    console.print(table)
    print_problems(summary.problems, console)


# --------------------------------------------------------------------------- report files


@dataclass(frozen=True)
class ReportFiles:
    csv: Path
    markdown: Path
    plot: Path


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
        header += [f"{metric}_mean", f"{metric}_std"]
    header.append("jobs")
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in summary.rows:
            cells: list[object] = [format_value(row.config[key]) for key in summary.keys]
            cells.append(row.n)
            for metric in summary.metrics:
                stat = row.stats.get(metric)
                cells.append("" if stat is None else _csv_number(stat.mean))
                cells.append("" if stat is None or stat.std is None else _csv_number(stat.std))
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
        f"in {folded}; n counts them.",
        "",
    ]
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


def _is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _plot_key(ax: Axes, summary: Summary, key: str) -> None:
    plotted = [row for row in summary.rows if summary.sort in row.stats]
    numeric = all(_is_number(row.config[key]) for row in summary.rows)
    categories = sorted({row.config[key] for row in plotted}, key=_value_sort_key)
    # Each combination of the other swept keys is one series, so no point hides another's.
    others = [k for k in summary.keys if k != key]
    series: dict[tuple[Value, ...], list[Row]] = {}
    for row in plotted:
        series.setdefault(tuple(row.config[k] for k in others), []).append(row)
    names = sorted(series, key=lambda values: [_value_sort_key(v) for v in values])
    for index, name in enumerate(names):
        members = sorted(series[name], key=lambda row: _value_sort_key(row.config[key]))
        if numeric:
            xs = [float(row.config[key]) for row in members]  # type: ignore[arg-type]
        else:
            dodge = 0.3 * (index / (len(names) - 1) - 0.5) if len(names) > 1 else 0.0
            xs = [categories.index(row.config[key]) + dodge for row in members]
        stats = [row.stats[summary.sort] for row in members]
        ax.errorbar(
            xs,
            [s.mean for s in stats],
            yerr=[s.std or 0.0 for s in stats],
            marker="o",
            capsize=3,
            linestyle="-" if numeric else "none",
            label=", ".join(f"{k}={format_value(v)}" for k, v in zip(others, name, strict=True)),
        )
    if numeric:
        values = [float(row.config[key]) for row in plotted]  # type: ignore[arg-type]
        if values and min(values) > 0 and max(values) / min(values) >= 100:
            ax.set_xscale("log")  # learning rates and the like span decades
    else:
        labels = [format_value(c) for c in categories]
        rotation = 20 if labels and max(map(len, labels)) > 8 else 0
        ax.set_xticks(range(len(categories)), labels, rotation=rotation)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    ax.set_xlabel(key)
    ax.set_ylabel(summary.sort)
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
            yerr=[s.std or 0.0 for s in stats],
            marker="o",
            capsize=3,
            linestyle="none",
        )
        axes[0].set_xticks(range(len(stats)), ["all jobs"] * len(stats))
        axes[0].set_ylabel(summary.sort)
    for ax in axes[panels:]:
        ax.set_visible(False)
    over = ", ".join(summary.fold_keys)
    fig.suptitle(f"{summary.sort}: mean ± std over {over}" if over else summary.sort)
    return fig


def write_report(summary: Summary, out_dir: Path | str) -> ReportFiles:
    """Write ``comparison.csv``, ``comparison.md`` and ``comparison.png`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = write_csv(summary, out_dir / CSV_NAME)
    markdown_path = out_dir / MARKDOWN_NAME
    markdown_path.write_text(render_markdown(summary, out_dir))
    plot_path = out_dir / PLOT_NAME
    build_figure(summary).savefig(plot_path, dpi=120)
    return ReportFiles(csv_path, markdown_path, plot_path)


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cxrnet-compare",
        description="Compare the jobs of one or more sweeps: mean ± std over seeds per "
        "configuration, as a table, CSV, Markdown and a plot.",
        epilog="example: cxrnet-compare multirun/2024-05-01/12-00-00 --metrics 'val/*' "
        "--sort val/auroc (folders first: --metrics and --fold-keys take every word after them)",
    )
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders to read")
    parser.add_argument(
        "--metrics",
        nargs="+",
        help="metrics to show, names or globs like 'val/*' (default: all val/ and test/ ones)",
    )
    parser.add_argument(
        "--sort", help="metric to sort by (default: the jobs' monitored metric, e.g. val/auroc)"
    )
    parser.add_argument("--ascending", action="store_true", help="smallest first (for losses)")
    parser.add_argument(
        "--fold-keys",
        nargs="*",
        default=list(DEFAULT_FOLD_KEYS),
        metavar="KEY",
        help="keys whose runs are repeats, folded into mean ± std; pass none to fold nothing "
        f"(default: {' '.join(DEFAULT_FOLD_KEYS)})",
    )
    parser.add_argument(
        "--out", type=Path, help="folder for comparison.{csv,md,png} (default: the first folder)"
    )
    return parser


def _fail(message: str, code: int = 1) -> int:
    print(f"cxrnet-compare: error: {message}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with a report, 1 when no job completed (or none found), 2 for an unknown metric."""
    args = build_parser().parse_args(argv)
    try:
        runs = collect_runs(args.folders)
    except FileNotFoundError as exc:
        return _fail(str(exc))
    where = ", ".join(str(folder) for folder in args.folders)
    if not runs:
        return _fail(
            f"no job found in {where}: expected folders holding .hydra/overrides.yaml or "
            "metrics.json, as cxrnet-train writes them"
        )
    console = Console()
    if not any(run.completed for run in runs):
        print_problems(runs, console)
        return _fail(f"none of the {len(runs)} jobs in {where} completed; see the list above")
    try:
        summary = summarize(runs, args.metrics, args.sort, args.fold_keys, args.ascending)
    except ValueError as exc:
        return _fail(str(exc), code=2)
    print_summary(summary, console)
    files = write_report(summary, args.out or args.folders[0])
    console.print(Text(f"wrote {files.csv}, {files.markdown}, {files.plot}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
