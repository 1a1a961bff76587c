"""Analysis of the validation-rebalancing study: does validation agree with the held-out set?

Reads what ``cxrnet-train`` wrote in every job folder below ``<study>/runs`` (``metrics.json``,
``predictions_val.csv``, ``predictions_test.csv``) and writes ``analysis.csv`` (one row per
run), ``analysis.json``, ``analysis.md`` (mean ± sample std per scheme, per k-fold fold, and the
k-fold folds pooled per seed) and ``analysis.png``.

The held-out ("test") predictions are only scored here: the best achievable held-out F1 is an
oracle for comparison and never feeds back into any choice.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cxrnet.comparison.stat import Stat, finite_stat
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.report import SplitPredictions, read_predictions
from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold
from cxrnet.publish import json_safe
from cxrnet.runs.results import RunResult, collect_runs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SCHEME_ORDER = ("official", "stratified 10%", "stratified 20%", "patient 20%", "5-fold")
KFOLD_POOLED = "k-fold pooled"
CSV_NAME, JSON_NAME, MARKDOWN_NAME, PLOT_NAME = (
    "analysis.csv",
    "analysis.json",
    "analysis.md",
    "analysis.png",
)
# Cells of the summary tables: (label, RunRow field).
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("val/auroc", "val_auroc"),
    ("held-out auroc", "test_auroc"),
    ("gap (val − held-out)", "gap"),
    ("abs gap", "abs_gap"),
    ("val threshold", "threshold"),
    ("held-out sens @thr", "test_sensitivity_at_threshold"),
    ("held-out spec @thr", "test_specificity_at_threshold"),
    ("held-out F1 @thr", "test_f1_at_threshold"),
    ("held-out best F1", "test_best_f1"),
    ("F1 shortfall", "f1_shortfall"),
)
# The same question with each threshold judged by its own criterion: the Youden threshold by
# held-out Youden J (sensitivity + specificity − 1), and a threshold chosen on validation for F1
# (from the run's validation predictions, so still validation-only) by held-out F1.
CONSISTENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("held-out J @thr", "test_youden_at_threshold"),
    ("held-out best J", "test_best_youden"),
    ("J shortfall", "youden_shortfall"),
    ("val F1-threshold", "threshold_f1"),
    ("held-out F1 @F1-thr", "test_f1_at_f1_threshold"),
    ("F1 shortfall (F1-thr)", "f1_shortfall_f1_threshold"),
)
ALL_COLUMNS = SUMMARY_COLUMNS + CONSISTENT_COLUMNS


@dataclass(frozen=True)
class RunRow:
    """One job of the study, with what the analysis derived from its files."""

    scheme: str
    seed: int
    fold: int | None  # k-fold only
    run_dir: str
    best_epoch: int | None
    n_val: int
    n_val_pneumonia: int
    n_test: int
    val_auroc: float
    test_auroc: float
    gap: float  # val/auroc - test/auroc: how optimistic validation was
    abs_gap: float
    threshold: float
    test_sensitivity_at_threshold: float
    test_specificity_at_threshold: float
    test_f1_at_threshold: float
    test_best_f1: float  # oracle: the best F1 any threshold reaches on the held-out set
    test_best_f1_threshold: float
    f1_shortfall: float  # test_best_f1 - test_f1_at_threshold
    test_youden_at_threshold: float
    test_best_youden: float  # oracle, as test_best_f1
    youden_shortfall: float
    threshold_f1: float  # chosen on the run's validation predictions for F1
    test_f1_at_f1_threshold: float
    f1_shortfall_f1_threshold: float  # test_best_f1 - test_f1_at_f1_threshold
    test_auroc_recomputed: float  # from predictions_test.csv, a check on test/auroc


# --------------------------------------------------------------------------- reading


def best_f1(predictions: SplitPredictions) -> tuple[float, float]:
    """(best F1, its threshold) over every threshold, with the project's F1 and tie rule."""
    threshold = choose_threshold(predictions.probabilities, predictions.labels, criterion="f1")
    f1 = binary_metrics_at(predictions.probabilities, predictions.labels, threshold)["f1"]
    return f1, threshold


def youden(metrics: Mapping[str, float]) -> float:
    return metrics["recall"] + metrics["specificity"] - 1


def best_youden(predictions: SplitPredictions) -> float:
    """The best Youden J over every threshold (an oracle on held-out data)."""
    threshold = choose_threshold(predictions.probabilities, predictions.labels, "youden")
    return youden(binary_metrics_at(predictions.probabilities, predictions.labels, threshold))


def scheme_of(run: RunResult) -> str:
    """The study's name for a job's validation scheme, from its config."""
    split = run.value("data.split")
    if split == "official":
        return "official"
    if split == "kfold":
        return f"{run.value('data.num_folds')}-fold"
    fraction = run.value("data.val_fraction")
    percent = round(float(fraction) * 100) if isinstance(fraction, int | float) else fraction
    return f"{split} {percent}%"


def _epoch(best_model_path: object) -> int | None:
    match = re.search(r"epoch_(\d+)", str(best_model_path or ""))
    return int(match.group(1)) if match else None


def run_row(run: RunResult) -> RunRow:
    """Everything the analysis needs from one completed job folder."""
    metrics = run.metrics
    val = read_predictions(run.path / "predictions_val.csv")
    test = read_predictions(run.path / "predictions_test.csv")
    top_f1, top_threshold = best_f1(test)
    seed = run.value("seed")
    scheme = scheme_of(run)
    fold = run.value("data.fold") if scheme.endswith("-fold") else None
    paths = run.record.paths if run.record else {}
    best_path = paths.get("best_checkpoint") or paths.get("best_model_path")
    j_at = metrics["test/recall_at_threshold"] + metrics["test/specificity_at_threshold"] - 1
    top_j = best_youden(test)
    threshold_f1 = choose_threshold(val.probabilities, val.labels, criterion="f1")
    f1_at_f1 = binary_metrics_at(test.probabilities, test.labels, threshold_f1)["f1"]
    return RunRow(
        scheme=scheme,
        seed=int(seed) if isinstance(seed, int | float) else -1,
        fold=int(fold) if isinstance(fold, int | float) else None,
        run_dir=str(run.path),
        best_epoch=_epoch(best_path),
        n_val=len(val.labels),
        n_val_pneumonia=int(val.labels.sum()),
        n_test=len(test.labels),
        val_auroc=metrics["val/auroc"],
        test_auroc=metrics["test/auroc"],
        gap=metrics["val/auroc"] - metrics["test/auroc"],
        abs_gap=abs(metrics["val/auroc"] - metrics["test/auroc"]),
        threshold=metrics["val/threshold"],
        test_sensitivity_at_threshold=metrics["test/recall_at_threshold"],
        test_specificity_at_threshold=metrics["test/specificity_at_threshold"],
        test_f1_at_threshold=metrics["test/f1_at_threshold"],
        test_best_f1=top_f1,
        test_best_f1_threshold=top_threshold,
        f1_shortfall=top_f1 - metrics["test/f1_at_threshold"],
        test_youden_at_threshold=j_at,
        test_best_youden=top_j,
        youden_shortfall=top_j - j_at,
        threshold_f1=threshold_f1,
        test_f1_at_f1_threshold=f1_at_f1,
        f1_shortfall_f1_threshold=top_f1 - f1_at_f1,
        test_auroc_recomputed=auroc(test.probabilities, test.labels),
    )


def _scheme_rank(scheme: str) -> tuple[int, str]:
    return (SCHEME_ORDER.index(scheme), scheme) if scheme in SCHEME_ORDER else (99, scheme)


def collect_rows(study_runs: Path | str) -> tuple[list[RunRow], list[RunResult]]:
    """(rows of the completed jobs, jobs that failed or never finished) below ``study_runs``."""
    runs = collect_runs([study_runs])
    rows = [run_row(run) for run in runs if run.completed]
    rows.sort(key=lambda r: (_scheme_rank(r.scheme), r.fold if r.fold is not None else -1, r.seed))
    return rows, [run for run in runs if not run.completed]


# --------------------------------------------------------------------------- summarizing


def summarize_rows(rows: Sequence[RunRow]) -> dict[str, Stat | None]:
    """Mean ± sample std of every summary column over ``rows``."""
    return {name: finite_stat(getattr(row, name) for row in rows) for _, name in ALL_COLUMNS}


def pooled_kfold(rows: Sequence[RunRow]) -> list[dict[str, float]]:
    """The k folds of each seed taken together, one dict per seed (needs every fold's files).

    Validation: the out-of-fold predictions of the k models concatenated (each image of the
    pool scored once) give the pooled val AUROC, and one Youden threshold chosen on them (the
    study's threshold criterion). Held-out: each fold model's predictions scored at that
    threshold, then averaged over the k models; the held-out AUROC and best F1 are also the
    mean over the k models, so the gap compares the pooled estimate with the models it
    describes.
    """
    by_seed: dict[int, list[RunRow]] = {}
    for row in rows:
        by_seed.setdefault(row.seed, []).append(row)
    pooled = []
    for seed, members in sorted(by_seed.items()):
        val = [read_predictions(Path(r.run_dir) / "predictions_val.csv") for r in members]
        labels = np.concatenate([p.labels for p in val])
        probabilities = np.concatenate([p.probabilities for p in val])
        files = [f for p in val for f in p.files]
        if len(set(files)) != len(files):
            raise ValueError(f"seed {seed}: the folds' validation sets overlap; not a k-fold")
        threshold = choose_threshold(probabilities, labels, criterion="youden")
        threshold_f1 = choose_threshold(probabilities, labels, criterion="f1")
        tests = [read_predictions(Path(r.run_dir) / "predictions_test.csv") for r in members]
        at = [binary_metrics_at(p.probabilities, p.labels, threshold) for p in tests]
        f1_at_f1 = statistics.fmean(
            binary_metrics_at(p.probabilities, p.labels, threshold_f1)["f1"] for p in tests
        )
        j_at = statistics.fmean(youden(m) for m in at)
        best_j = statistics.fmean(r.test_best_youden for r in members)
        val_auroc = auroc(probabilities, labels)
        test_auroc = statistics.fmean(r.test_auroc for r in members)
        f1_at = statistics.fmean(m["f1"] for m in at)
        best = statistics.fmean(r.test_best_f1 for r in members)
        pooled.append(
            {
                "seed": seed,
                "folds": len(members),
                "n_val": len(labels),
                "val_auroc": val_auroc,
                "test_auroc": test_auroc,
                "gap": val_auroc - test_auroc,
                "abs_gap": abs(val_auroc - test_auroc),
                "threshold": threshold,
                "test_sensitivity_at_threshold": statistics.fmean(m["recall"] for m in at),
                "test_specificity_at_threshold": statistics.fmean(m["specificity"] for m in at),
                "test_f1_at_threshold": f1_at,
                "test_best_f1": best,
                "f1_shortfall": best - f1_at,
                "test_youden_at_threshold": j_at,
                "test_best_youden": best_j,
                "youden_shortfall": best_j - j_at,
                "threshold_f1": threshold_f1,
                "test_f1_at_f1_threshold": f1_at_f1,
                "f1_shortfall_f1_threshold": best - f1_at_f1,
            }
        )
    return pooled


@dataclass(frozen=True)
class TableRow:
    label: str
    n: int
    n_val: str  # validation images per run ("16" or "834-837")
    stats: dict[str, Stat | None]


def _n_val_text(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return str(low) if low == high else f"{low}-{high}"


def summary_tables(
    rows: Sequence[RunRow], pooled: Sequence[Mapping[str, float]]
) -> tuple[list[TableRow], list[TableRow]]:
    """(one row per scheme, with k-fold as all runs and pooled; one row per k-fold fold)."""
    schemes = sorted({r.scheme for r in rows}, key=_scheme_rank)
    main: list[TableRow] = []
    for scheme in schemes:
        members = [r for r in rows if r.scheme == scheme]
        label = f"{scheme} (every fold run)" if scheme.endswith("-fold") else scheme
        main.append(
            TableRow(
                label,
                len(members),
                _n_val_text([r.n_val for r in members]),
                summarize_rows(members),
            )
        )
    if pooled:
        stats = {name: finite_stat(p[name] for p in pooled) for _, name in ALL_COLUMNS}
        main.append(
            TableRow(
                f"{KFOLD_POOLED} (per seed)",
                len(pooled),
                _n_val_text([int(p["n_val"]) for p in pooled]),
                stats,
            )
        )
    folds: list[TableRow] = []
    kfold_rows = [r for r in rows if r.fold is not None]
    for fold in sorted({r.fold for r in kfold_rows if r.fold is not None}):
        members = [r for r in kfold_rows if r.fold == fold]
        folds.append(
            TableRow(
                f"fold {fold}",
                len(members),
                _n_val_text([r.n_val for r in members]),
                summarize_rows(members),
            )
        )
    return main, folds


# --------------------------------------------------------------------------- writing


def format_stat(value: Stat | None, digits: int = 3) -> str:
    return "–" if value is None else value.text(digits)


def markdown_table(
    rows: Sequence[TableRow],
    first: str = "scheme",
    columns: Sequence[tuple[str, str]] = SUMMARY_COLUMNS,
) -> str:
    header = [first, "n", "val images", *(label for label, _ in columns)]
    lines = [
        "| " + " | ".join(header) + " |",
        "|---|--:|--:|" + "--:|" * len(columns),
    ]
    for row in rows:
        cells = [row.label, str(row.n), row.n_val]
        cells += [format_stat(row.stats[name]) for _, name in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_markdown(
    main: Sequence[TableRow], folds: Sequence[TableRow], problems: Sequence[RunResult]
) -> str:
    parts = [
        "# Validation rebalancing: validation against the held-out set",
        "",
        "Mean ± sample std over runs (n). gap = val/auroc − held-out auroc of the checkpoint "
        "validation selected; @thr = at the threshold chosen on validation (Youden); best F1 = "
        "the best held-out F1 over all thresholds (an oracle, analysis only); F1 shortfall = best "
        "F1 − F1 @thr.",
        "",
        markdown_table(main),
        "",
        "Each threshold judged by its own criterion: J = sensitivity + specificity − 1 at the "
        "Youden threshold above, against the best held-out J; and a threshold chosen on the same "
        "validation predictions for F1, against the best held-out F1.",
        "",
        markdown_table(main, columns=CONSISTENT_COLUMNS),
        "",
    ]
    if folds:
        parts += ["## k-fold, per fold (over seeds)", "", markdown_table(folds, "fold"), ""]
    parts += [f"![validation against held-out]({PLOT_NAME})", ""]
    if problems:
        parts += [f"## Failed or unfinished jobs ({len(problems)})", ""]
        parts += [f"- `{run.path}`: {run.status}: {run.error}" for run in problems]
        parts.append("")
    return "\n".join(parts)


def _stat_dict(value: Stat | None) -> dict[str, float | int | None] | None:
    return None if value is None else asdict(value)


def _portable(row: RunRow, study_dir: Path) -> dict[str, object]:
    """The row as a dict, its run folder relative to the study (results travel)."""
    values = asdict(row)
    run_dir = Path(row.run_dir)
    if run_dir.is_relative_to(study_dir):
        values["run_dir"] = str(run_dir.relative_to(study_dir))
    return values


def write_csv(path: Path, rows: Sequence[RunRow], study_dir: Path) -> None:
    names = [f.name for f in fields(RunRow)]
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(names)
        for row in rows:
            values = _portable(row, study_dir)
            writer.writerow([_csv_cell(values[name]) for name in names])


def _csv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


def _scheme_colors(schemes: Sequence[str]) -> dict[str, str]:
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#7f7f7f"]
    return {scheme: palette[i % len(palette)] for i, scheme in enumerate(schemes)}


def build_figure(
    rows: Sequence[RunRow], main: Sequence[TableRow], pooled: Sequence[Mapping[str, float]] = ()
) -> Figure:
    """Left: val/auroc − held-out AUROC, one point per run (and per seed for k-fold pooled).
    Right: held-out F1 at the validation threshold against the best held-out F1, per scheme."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    schemes = sorted({r.scheme for r in rows}, key=_scheme_rank)
    gaps = [[r.gap for r in rows if r.scheme == scheme] for scheme in schemes]
    labels = list(schemes)
    if pooled:
        gaps.append([p["gap"] for p in pooled])
        labels.append(KFOLD_POOLED)
    jitter = np.random.default_rng(0)  # fixed, so the figure is reproducible
    for index, values in enumerate(gaps):
        xs = index + jitter.uniform(-0.15, 0.15, len(values))
        left.scatter(xs, values, s=16, alpha=0.8)
    left.axhline(0.0, color="grey", linewidth=0.8, linestyle="--")
    left.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize="small")
    left.set_ylabel("val/auroc − held-out AUROC")
    left.set_title("AUROC gap of the selected checkpoint, one point per run", fontsize="medium")
    left.grid(alpha=0.3)

    xs = np.arange(len(main))
    for offset, name, label, marker in (
        (-0.12, "test_f1_at_threshold", "held-out F1 at val threshold", "o"),
        (0.12, "test_best_f1", "held-out best F1 (oracle)", "s"),
    ):
        means = [row.stats[name].mean if row.stats[name] else math.nan for row in main]
        stds = [(row.stats[name].std or 0.0) if row.stats[name] else 0.0 for row in main]
        right.errorbar(xs + offset, means, yerr=stds, fmt=marker, capsize=3, label=label)
    names = [row.label.split(" (")[0] for row in main]
    right.set_xticks(xs, names, rotation=20, ha="right", fontsize="small")
    right.set_ylabel("held-out F1 (mean ± std)")
    right.set_title("threshold chosen on validation vs best", fontsize="medium")
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    return fig


def write_analysis(study_dir: Path | str) -> dict[str, object]:
    """Analyse ``<study_dir>/runs`` and write the four files into ``study_dir``."""
    study_dir = Path(study_dir)
    rows, problems = collect_rows(study_dir / "runs")
    if not rows:
        raise ValueError(f"no completed run below {study_dir / 'runs'}")
    kfold_rows = [r for r in rows if r.fold is not None]
    pooled = pooled_kfold(kfold_rows) if kfold_rows else []
    main, folds = summary_tables(rows, pooled)
    write_csv(study_dir / CSV_NAME, rows, study_dir)
    (study_dir / MARKDOWN_NAME).write_text(render_markdown(main, folds, problems))
    build_figure(rows, main, pooled).savefig(study_dir / PLOT_NAME, dpi=90)
    result: dict[str, object] = {
        "runs": [_portable(r, study_dir) for r in rows],
        "schemes": {
            row.label: {name: _stat_dict(row.stats[name]) for _, name in ALL_COLUMNS}
            | {"n": row.n, "n_val": row.n_val}
            for row in main
        },
        "folds": {
            row.label: {name: _stat_dict(row.stats[name]) for _, name in ALL_COLUMNS}
            | {"n": row.n, "n_val": row.n_val}
            for row in folds
        },
        "kfold_pooled_per_seed": pooled,
        "held_out_sets_identical": len({_test_files(r) for r in rows}) == 1,
        "max_test_auroc_recompute_error": max(
            abs(r.test_auroc - r.test_auroc_recomputed) for r in rows
        ),
        "problems": [{"run": str(p.path), "status": p.status, "error": p.error} for p in problems],
    }
    (study_dir / JSON_NAME).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return result


def _test_files(row: RunRow) -> tuple[str, ...]:
    return tuple(sorted(read_predictions(Path(row.run_dir) / "predictions_test.csv").files))


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        out("usage: python experiments/val_rebalancing/analysis.py STUDY_DIR")
        return 2
    write_analysis(Path(args[0]))
    out((Path(args[0]) / MARKDOWN_NAME).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
