"""What a training run prints last: a metric-by-split table of the best checkpoint, then where
its files are and what to run next."""

from __future__ import annotations

from pathlib import Path

from cxrnet.evaluation.metric_names import in_console_summary
from cxrnet.runs import RunRecord


def print_summary(record: RunRecord) -> None:
    """A metric-by-split table of the best checkpoint, then where everything went."""
    metrics = record.metrics
    splits = [s for s in ("val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    # Intervals and counts live in metrics.json and report.md; the table keeps point estimates.
    names = sorted(
        {
            key.split("/", 1)[1]
            for key in metrics
            if key.split("/", 1)[0] in splits and in_console_summary(key)
        }
    )
    if names:
        width = max(len(name) for name in names)
        print(f"\n{'metric':<{width}}  " + "  ".join(f"{split:>8}" for split in splits))
        for name in names:
            cells = [metrics.get(f"{split}/{name}") for split in splits]
            row = "  ".join("       -" if c is None else f"{c:8.4f}" for c in cells)
            print(f"{name:<{width}}  {row}")
    print()
    for line in closing_lines(record):
        print(line)


def closing_lines(record: RunRecord) -> list[str]:
    """Where the run's files are and what to run next: its folder, its report, and the commands
    that score the best checkpoint on another site's films and on new films."""
    run_dir = Path(record.run_dir)
    best = record.paths.get("best_checkpoint")
    lines = [f"run folder: {run_dir}"]
    if (run_dir / "report.md").is_file():
        lines.append(f"report: {run_dir / 'report.md'}")
    if best:
        lines += [
            f"best checkpoint: {best}",
            f"next: cxrnet-eval ckpt_path={best} data.root=<another site's films>   "
            "(external validation)",
            f"      cxrnet-predict ckpt_path={best} input=<films>   (a probability and a call "
            "per film)",
        ]
    return lines
