"""Cross-validated numbers per variant, the operating point's stability, and the held-out check.

Reads every finished job under ``<out>/runs/<study>/<variant>/`` (its ``metrics.json`` and the
``predictions_{val,test}.csv`` the evaluation pass wrote). In each job, ``val`` is one fold of
train+val and ``test`` is the fixed patient-grouped held-out set. Per variant and seed:

- **cross-validated** (chooses recipes): AUROC of the pooled out-of-fold predictions (each image
  scored once, by the model that did not train on it), with a patient bootstrap interval; and
  sensitivity, specificity and F1 where each fold's threshold is chosen on the *other* folds'
  out-of-fold predictions, so no image is scored at a threshold fitted to it;
- **operating point**: the threshold each fold model chooses on its own validation fold, per
  criterion, its spread over folds and seeds, raw and after temperature scaling, and the held-out
  sensitivity it gives;
- **held-out** (read once a recipe is chosen, never to choose it): the fold ensemble (mean of the
  5 fold models' probabilities) at the threshold chosen on the pooled out-of-fold predictions.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrnet.evaluation.bootstrap import bootstrap_intervals
from cxrnet.evaluation.calibration import apply_temperature, fit_temperature
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold, metrics_from_confusion
from cxrnet.runs import RunStatus, find_job_dirs, overrides_as_dict, read_record

POSITIVE = "PNEUMONIA"
# The criteria of the operating-point study; the sensitivity criterion keeps >= this floor.
CRITERIA = ("youden", "f1", "sensitivity")
MIN_SENSITIVITY = 0.95
RESAMPLES = 1000


@dataclass(frozen=True)
class Predictions:
    files: tuple[str, ...]
    patients: tuple[str, ...]
    labels: np.ndarray
    probabilities: np.ndarray

    def take(self, order: Sequence[str]) -> Predictions:
        """These predictions in the order of ``order`` (file names); every file must be here."""
        index = {name: i for i, name in enumerate(self.files)}
        rows = np.array([index[name] for name in order])
        return Predictions(
            tuple(order),
            tuple(self.patients[i] for i in rows),
            self.labels[rows],
            self.probabilities[rows],
        )


@dataclass(frozen=True)
class Job:
    study: str
    variant: str
    seed: int
    fold: int
    seconds: float
    val: Predictions
    test: Predictions


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None
    n: int

    def text(self, digits: int = 3) -> str:
        if self.std is None:
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def stat(values: Iterable[float]) -> Stat:
    array = np.asarray(list(values), dtype=np.float64)
    return Stat(
        float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None, array.size
    )


def read_predictions(path: Path) -> Predictions:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise ValueError(f"{path} holds no predictions")
    return Predictions(
        tuple(row["file"] for row in rows),
        tuple(row["patient"] for row in rows),
        np.array([row["label"] == POSITIVE for row in rows], dtype=np.int64),
        np.array([float(row["probability"]) for row in rows], dtype=np.float64),
    )


def collect_jobs(out: Path) -> list[Job]:
    """Every completed job under ``<out>/runs``; failed or unfinished ones are listed, not used."""
    jobs = []
    for variant_dir in sorted((out / "runs").glob("*/*")):
        for job_dir in find_job_dirs(variant_dir):
            record = read_record(job_dir)
            if record is None or record.status != RunStatus.COMPLETED:
                status = "no record" if record is None else record.status.value
                print(f"skipped {job_dir}: {status}", file=sys.stderr)
                continue
            overrides = overrides_as_dict(record.overrides)
            jobs.append(
                Job(
                    study=variant_dir.parent.name,
                    variant=variant_dir.name,
                    seed=int(overrides.get("seed", 42)),
                    fold=int(overrides.get("data.fold", 0)),
                    seconds=float(record.duration_s or 0.0),
                    val=read_predictions(job_dir / "predictions_val.csv"),
                    test=read_predictions(job_dir / "predictions_test.csv"),
                )
            )
    return jobs


def _concat(parts: Sequence[Predictions]) -> Predictions:
    return Predictions(
        tuple(f for p in parts for f in p.files),
        tuple(g for p in parts for g in p.patients),
        np.concatenate([p.labels for p in parts]),
        np.concatenate([p.probabilities for p in parts]),
    )


def _interval(pred: Predictions, seed: int = 0) -> tuple[float, float]:
    def metrics(indices: np.ndarray) -> dict[str, float]:
        return {"auroc": auroc(pred.probabilities[indices], pred.labels[indices])}

    low, high = bootstrap_intervals(
        metrics, len(pred.labels), pred.patients, resamples=RESAMPLES, seed=seed
    )["auroc"]
    return float(low), float(high)


def _threshold(pred: Predictions, criterion: str) -> float:
    return choose_threshold(pred.probabilities, pred.labels, criterion, MIN_SENSITIVITY)  # type: ignore[arg-type]


def cross_validated(folds: Mapping[int, Job]) -> dict[str, float]:
    """Pooled out-of-fold AUROC and cross-fitted operating-point metrics of one (variant, seed)."""
    pooled = _concat([job.val for job in folds.values()])
    low, high = _interval(pooled)
    out = {"cv_auroc": auroc(pooled.probabilities, pooled.labels), "cv_auroc_low": low}
    out["cv_auroc_high"] = high
    # Each fold scored at the Youden threshold of the other folds' out-of-fold predictions.
    counts = np.zeros(4)
    for fold, job in folds.items():
        others = _concat([other.val for k, other in folds.items() if k != fold])
        threshold = _threshold(others, "youden")
        predicted = job.val.probabilities >= threshold
        positive = job.val.labels == 1
        counts += [
            np.sum(predicted & positive),
            np.sum(predicted & ~positive),
            np.sum(~predicted & positive),
            np.sum(~predicted & ~positive),
        ]
    at = metrics_from_confusion(*counts)
    out.update(cv_sensitivity=at["recall"], cv_specificity=at["specificity"], cv_f1=at["f1"])
    return out


def held_out(folds: Mapping[int, Job]) -> dict[str, float]:
    """The fold ensemble on the held-out set at the pooled out-of-fold Youden threshold."""
    order = next(iter(folds.values())).test.files
    members = [job.test.take(order) for job in folds.values()]
    if any(not np.array_equal(m.labels, members[0].labels) for m in members):
        raise ValueError("the fold models were scored on different held-out sets")
    mean = Predictions(order, members[0].patients, members[0].labels, np.mean(
        [m.probabilities for m in members], axis=0
    ))  # fmt: skip
    pooled = _concat([job.val for job in folds.values()])
    threshold = _threshold(pooled, "youden")
    at = binary_metrics_at(mean.probabilities, mean.labels, threshold)
    low, high = _interval(mean)
    return {
        "ensemble_auroc": auroc(mean.probabilities, mean.labels),
        "ensemble_auroc_low": low,
        "ensemble_auroc_high": high,
        "single_auroc_mean": float(np.mean([auroc(m.probabilities, m.labels) for m in members])),
        "threshold": threshold,
        "sensitivity": at["recall"],
        "specificity": at["specificity"],
        "f1": at["f1"],
        "n": float(len(order)),
    }


def operating_points(jobs: Sequence[Job]) -> dict[str, dict[str, Stat]]:
    """Per criterion: the spread of each job's own validation threshold and what it gives."""
    result = {}
    for criterion in CRITERIA:
        raw, calibrated, sensitivity, specificity = [], [], [], []
        for job in jobs:
            threshold = _threshold(job.val, criterion)
            raw.append(threshold)
            # Temperature scaling is monotone: the same decisions, but a threshold in calibrated
            # probability, which is comparable across models.
            temperature = fit_temperature(job.val.probabilities, job.val.labels)
            calibrated.append(float(apply_temperature(np.array([threshold]), temperature)[0]))
            at = binary_metrics_at(job.test.probabilities, job.test.labels, threshold)
            sensitivity.append(at["recall"])
            specificity.append(at["specificity"])
        result[criterion] = {
            "threshold": stat(raw),
            "threshold_calibrated": stat(calibrated),
            "held_out_sensitivity": stat(sensitivity),
            "held_out_sensitivity_min": Stat(min(sensitivity), None, len(sensitivity)),
            "held_out_specificity": stat(specificity),
        }
    return result


def summarize(jobs: Sequence[Job]) -> dict[str, dict[str, object]]:
    """Per variant: cross-validated numbers (mean over seeds), held-out numbers, cost."""
    by_variant: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in jobs:
        by_variant[(job.study, job.variant)].append(job)
    summary = {}
    for (study, variant), members in by_variant.items():
        seeds: dict[int, dict[int, Job]] = defaultdict(dict)
        for job in members:
            seeds[job.seed][job.fold] = job
        complete = {s: f for s, f in seeds.items() if len(f) == max(map(len, seeds.values()))}
        cv = [cross_validated(folds) for folds in complete.values()]
        held = [held_out(folds) for folds in complete.values()]
        summary[f"{study}/{variant}"] = {
            "study": study,
            "variant": variant,
            "seeds": sorted(complete),
            "folds": max(map(len, seeds.values())),
            "cpu_hours": sum(job.seconds for job in members) / 3600,
            "fold_val_auroc": stat(auroc(j.val.probabilities, j.val.labels) for j in members),
            "cv": {key: stat(row[key] for row in cv) for key in cv[0]},
            "held_out": {key: stat(row[key] for row in held) for key in held[0]},
            "operating_points": operating_points(members),
        }
    return summary


def _plain(value: object) -> object:
    if isinstance(value, Stat):
        return {"mean": value.mean, "std": value.std, "n": value.n}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _ci(stats: Mapping[str, Stat], key: str) -> str:
    low, high = stats[f"{key}_low"].mean, stats[f"{key}_high"].mean
    return f"{stats[key].text()} [{low:.3f}, {high:.3f}]"


def render(summary: Mapping[str, Mapping[str, object]]) -> str:
    lines = [
        "# Cross-validated recipe studies",
        "",
        "Mean ± sample std over seeds where a variant has several; [low, high] is the patient "
        "bootstrap 95% interval (mean over seeds). CV = pooled out-of-fold predictions of 5 "
        "patient-grouped folds of train+val; its sensitivity, specificity and F1 use, for each "
        "fold, the Youden threshold of the other folds. Per-fold val AUROC = mean ± std over "
        "every fold model (folds and seeds). Job h = the jobs' wall hours, one thread each (an "
        "upper bound on CPU hours on a shared machine). Held-out = the fold ensemble on the "
        "fixed patient-grouped held-out set at the pooled out-of-fold Youden threshold.",
        "",
        "## Cross-validated (what the recipes are chosen by)",
        "",
    ]
    rows = []
    for name, item in summary.items():
        cv = item["cv"]
        rows.append([
            name, ",".join(map(str, item["seeds"])), str(item["folds"]), _ci(cv, "cv_auroc"),
            cv["cv_sensitivity"].text(), cv["cv_specificity"].text(), cv["cv_f1"].text(),
            item["fold_val_auroc"].text(), f"{item['cpu_hours']:.2f}",
        ])  # fmt: skip
    header = ["variant", "seeds", "folds", "CV AUROC (pooled)", "CV sens", "CV spec", "CV F1"]
    lines += _table([*header, "per-fold val AUROC", "job h"], rows)
    lines += ["", "## Held-out fold ensemble (read after choosing)", ""]
    rows = []
    for name, item in summary.items():
        held = item["held_out"]
        rows.append([
            name, _ci(held, "ensemble_auroc"), held["single_auroc_mean"].text(),
            held["threshold"].text(), held["sensitivity"].text(), held["specificity"].text(),
            held["f1"].text(),
        ])  # fmt: skip
    header = ["variant", "ensemble AUROC", "single-model AUROC", "threshold", "sens", "spec", "F1"]
    lines += _table(header, rows)
    lines += [
        "",
        "## Operating point per fold model (its own validation fold; all folds and seeds)",
        "",
        f"sensitivity = the highest threshold keeping validation sensitivity >= {MIN_SENSITIVITY}."
        " Calibrated = the same threshold after temperature scaling fitted on that validation "
        "fold: identical decisions (the map is monotone), a number comparable across models.",
        "",
    ]
    rows = []
    for name, item in summary.items():
        for criterion, points in item["operating_points"].items():
            rows.append([
                name, criterion, points["threshold"].text(),
                points["threshold_calibrated"].text(), points["held_out_sensitivity"].text(),
                f"{points['held_out_sensitivity_min'].mean:.3f}",
                points["held_out_specificity"].text(),
            ])  # fmt: skip
    header = ["variant", "criterion", "threshold", "calibrated threshold", "held-out sens"]
    lines += _table([*header, "min sens", "held-out spec"], rows)
    return "\n".join(lines) + "\n"


COMPARE_METRICS = [
    "val/auroc",
    "val/f1_at_threshold",
    "val/recall_at_threshold",
    "val/specificity_at_threshold",
    "val/threshold",
]


def compare(out: Path, study_dirs: Sequence[Path]) -> int:
    """``cxrnet-compare`` over the studies' sweeps: mean ± std over folds and seeds, n."""
    command = [
        sys.executable, "-m", "cxrnet.cli.compare", *map(str, study_dirs),
        "--fold-keys", "seed", "data.fold", "--sort", "val/auroc", "--out", str(out),
        "--metrics", *COMPARE_METRICS,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True).returncode


def write_analysis(out: Path | str) -> dict[str, object]:
    out = Path(out)
    jobs = collect_jobs(out)
    if not jobs:
        raise SystemExit(f"no completed jobs under {out / 'runs'}")
    summary = summarize(jobs)
    (out / "analysis.json").write_text(json.dumps(_plain(summary), indent=2) + "\n")
    (out / "analysis.md").write_text(render(summary))
    compare(out, sorted((out / "runs").glob("*/*")))
    print(render(summary))
    return summary


if __name__ == "__main__":
    write_analysis(sys.argv[1] if len(sys.argv) > 1 else "logs/cv_studies")
