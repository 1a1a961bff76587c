"""The files of a comparison: ``comparison.csv``, ``comparison.md`` and ``comparison.png``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrnet.comparison.plot import build_figure
from cxrnet.comparison.render import CSV_NAME, MARKDOWN_NAME, PLOT_NAME, render_markdown, write_csv
from cxrnet.comparison.summary import Summary


@dataclass(frozen=True)
class ReportFiles:
    csv: Path
    markdown: Path
    plot: Path


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
