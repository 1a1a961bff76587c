"""One PNG per evaluated split: ROC, precision-recall, reliability and confusion at a glance."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never a display
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD
from cxrnet.evaluation.report import EvaluationReport, finite


def plot_split(report: EvaluationReport, split: str, path: Path) -> Path:
    """ROC and PR curves with the operating point (and the default threshold) marked, the
    reliability diagram with its ECE, and the confusion matrix at the chosen threshold."""
    threshold = report.operating_point.threshold
    fig, axes = plt.subplots(2, 2, figsize=(10, 9))
    (roc_ax, pr_ax), (rel_ax, cm_ax) = axes
    _plot_curves(roc_ax, pr_ax, report, split)
    _plot_reliability(rel_ax, report, split)
    _plot_confusion(cm_ax, report, split)
    m = report.metrics
    sens, spec = m[f"{split}/recall_at_threshold"], m[f"{split}/specificity_at_threshold"]
    if finite(sens) and finite(spec):
        fig.suptitle(
            f"{split}: sensitivity {sens:.3f}, specificity {spec:.3f} at threshold "
            f"{threshold:.3f} ({report.operating_point.criterion})"
        )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_curves(roc_ax: Axes, pr_ax: Axes, report: EvaluationReport, split: str) -> None:
    """ROC and precision-recall curves, the chosen and the default threshold marked on both."""
    part = report.splits[split]
    labels = part.predictions.labels
    m = report.metrics
    roc, pr = part.curve("roc"), part.curve("pr")
    if roc is not None and pr is not None:  # a curve needs both classes
        fpr, tpr = roc
        roc_ax.plot(fpr, tpr, color="C0", label=f"AUROC {m[f'{split}/auroc']:.3f}")
        roc_ax.plot([0, 1], [0, 1], color="0.7", linestyle="--", linewidth=1)
        recall, precision = pr
        pr_ax.step(recall, precision, where="post", color="C0")
        pr_ax.plot([], [], color="C0", label=f"AUPRC {m[f'{split}/auprc']:.3f}")
        pr_ax.axhline(labels.mean(), color="0.7", linestyle="--", linewidth=1, label="prevalence")
        chosen = report.operating_point.threshold
        for t, key, style in ((chosen, "_at_threshold", "o"), (DEFAULT_THRESHOLD, "", "s")):
            sens, spec = m[f"{split}/recall{key}"], m[f"{split}/specificity{key}"]
            prec = m[f"{split}/precision{key}"]
            name = "chosen" if key else f"{DEFAULT_THRESHOLD:g}"
            roc_ax.plot(1 - spec, sens, style, markersize=9, label=f"{name} t={t:.3f}")
            pr_ax.plot(sens, prec, style, markersize=9, label=f"{name} t={t:.3f}")
    roc_ax.set(title=f"ROC ({split})", xlabel="1 - specificity", ylabel="sensitivity")
    pr_ax.set(title=f"Precision-recall ({split})", xlabel="sensitivity (recall)")
    pr_ax.set_ylabel("precision")
    for ax in (roc_ax, pr_ax):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.legend(loc="lower right" if ax is roc_ax else "lower left", fontsize=9)
        ax.grid(alpha=0.3)


def _plot_reliability(rel_ax: Axes, report: EvaluationReport, split: str) -> None:
    """Observed pneumonia rate per probability bin, with each bin's film count."""
    part = report.splits[split]
    rel = part.reliability
    centres = (rel.edges[:-1] + rel.edges[1:]) / 2
    filled = rel.counts > 0
    rel_ax.bar(
        centres[filled],
        rel.observed[filled],
        width=np.diff(rel.edges)[filled] * 0.9,
        color="C0",
        alpha=0.7,
        label="observed pneumonia rate",
    )
    rel_ax.plot([0, 1], [0, 1], color="0.4", linestyle="--", linewidth=1, label="perfect")
    rel_ax.plot(rel.confidence[filled], rel.observed[filled], "o", color="C1", label="bin mean")
    for x, y, n in zip(centres[filled], rel.observed[filled], rel.counts[filled], strict=True):
        rel_ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(0, 3), ha="center")
    title = f"Reliability ({split}): ECE {part.ece:.3f}"
    if part.calibrated_ece is not None and report.temperature is not None:
        title += f"\nafter temperature {report.temperature:.2f}: ECE {part.calibrated_ece:.3f}"
    rel_ax.set(title=title, xlabel="predicted pneumonia probability", ylabel="observed rate")
    rel_ax.set_xlim(0, 1)
    rel_ax.set_ylim(0, 1.05)
    rel_ax.legend(loc="lower right", fontsize=9)  # the bars crowd the top left


def _plot_confusion(cm_ax: Axes, report: EvaluationReport, split: str) -> None:
    part = report.splits[split]
    c = part.confusion
    matrix = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
    cm_ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        cm_ax.text(col, row, str(count), ha="center", va="center", fontsize=16, color=colour)
    cm_ax.set_xticks([0, 1], ["NORMAL", "PNEUMONIA"])
    cm_ax.set_yticks([0, 1], ["NORMAL", "PNEUMONIA"])
    cm_ax.set(
        title=f"Confusion at threshold {report.operating_point.threshold:.3f} "
        f"({split}, n={len(part.predictions.labels)})",
        xlabel="predicted",
        ylabel="true",
    )
