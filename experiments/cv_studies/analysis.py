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

import json
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cxrnet.comparison.stat import Stat
from cxrnet.evaluation.calibration import apply_temperature, fit_temperature
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.report import ReportSettings, SplitPredictions, read_predictions
from cxrnet.evaluation.thresholds import ThresholdRule, binary_metrics_at, choose_operating_point
from cxrnet.passes.fold_ensemble import (
    cross_fitted_thresholds,
    cross_validated_metrics,
    mean_over_members,
    pooled_out_of_fold,
)
from cxrnet.runs.results import collect_runs

# The criteria of the operating-point study; the sensitivity criterion keeps >= this floor.
# The criteria of the operating-point study: name -> (threshold.criterion, sensitivity floor).
CRITERIA = {
    "youden": ("youden", 0.95),
    "f1": ("f1", 0.95),
    "sens>=0.95": ("sensitivity", 0.95),
    "sens>=0.97": ("sensitivity", 0.97),
}
# The anchor every variant is compared with, fold by fold, at the variants' seed.
BASELINE = "baseline/baseline"
RESAMPLES = 1000


@dataclass(frozen=True)
class Job:
    study: str
    variant: str
    seed: int
    fold: int
    seconds: float
    val: SplitPredictions
    test: SplitPredictions


def stat(values: Iterable[float]) -> Stat:
    # NumPy's mean, with a NaN kept (finite_stat drops it): as the committed results were made.
    array = np.asarray(list(values), dtype=np.float64)
    return Stat(
        float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else None, array.size
    )


def collect_jobs(out: Path) -> list[Job]:
    """Every completed job under ``<out>/runs``; failed or unfinished ones are listed, not used."""
    jobs = []
    for variant_dir in sorted((out / "runs").glob("*/*")):
        for run in collect_runs([variant_dir]):
            if not run.completed or run.record is None:
                print(f"skipped {run.path}: {run.status}", file=sys.stderr)
                continue
            jobs.append(
                Job(
                    study=variant_dir.parent.name,
                    variant=variant_dir.name,
                    seed=int(run.overrides.get("seed", 42)),  # type: ignore[arg-type]
                    fold=int(run.overrides.get("data.fold", 0)),  # type: ignore[arg-type]
                    seconds=float(run.record.duration_s or 0.0),
                    val=read_predictions(run.path / "predictions_val.csv"),
                    test=read_predictions(run.path / "predictions_test.csv"),
                )
            )
    return jobs


SETTINGS = ReportSettings(resamples=RESAMPLES)


def _rule(name: str) -> ThresholdRule:
    criterion, floor = CRITERIA[name]
    return ThresholdRule(criterion, min_sensitivity=floor)  # type: ignore[arg-type]


def _threshold(pred: SplitPredictions, criterion: str) -> float:
    return choose_operating_point(pred.probabilities, pred.labels, _rule(criterion)).threshold


def cross_validated(folds: Mapping[int, Job]) -> dict[str, float]:
    """Pooled out-of-fold AUROC and cross-fitted Youden calls of one (variant, seed), with
    patient bootstrap intervals (cxrnet.passes.fold_ensemble, as cxrnet-ensemble reports)."""
    parts = [folds[fold].val for fold in sorted(folds)]
    pooled = pooled_out_of_fold(parts)
    return cross_validated_metrics(
        pooled, cross_fitted_thresholds(parts, _rule("youden")), SETTINGS
    )


def held_out(folds: Mapping[int, Job]) -> dict[str, float]:
    """The fold ensemble on the held-out set at the pooled out-of-fold Youden threshold."""
    ordered = sorted(folds)
    members = [folds[fold].test for fold in ordered]
    mean = mean_over_members(members, [f"fold {fold}" for fold in ordered])
    threshold = _threshold(pooled_out_of_fold([folds[fold].val for fold in ordered]), "youden")
    # The same metrics and patient intervals, every film called at the one threshold.
    metrics = cross_validated_metrics(mean, np.full(len(mean), threshold), SETTINGS)
    return {
        **{key.replace("cv/", "held_out/"): value for key, value in metrics.items()},
        "single_auroc_mean": float(np.mean([auroc(m.probabilities, m.labels) for m in members])),
        "threshold": threshold,
        "n": float(len(mean)),
    }


def _per_fold_calls(
    parts: Sequence[SplitPredictions], criterion: str
) -> tuple[list[float], list[float]]:
    """Sensitivity and specificity of each fold called at the threshold ``criterion`` chooses
    on the other folds' out-of-fold predictions: how the operating point carries to new data."""
    thresholds = cross_fitted_thresholds(parts, _rule(criterion))
    sensitivity, specificity, start = [], [], 0
    for part in parts:
        at = binary_metrics_at(part.probabilities, part.labels, thresholds[start])
        start += len(part)
        sensitivity.append(at["recall"])
        specificity.append(at["specificity"])
    return sensitivity, specificity


def operating_points(seeds: Mapping[int, Mapping[int, Job]]) -> dict[str, dict[str, Stat]]:
    """Per criterion: the spread of each fold model's own validation threshold and the held-out
    sensitivity it gives; and, over folds and seeds, the sensitivity and specificity when each
    fold is called at the threshold chosen on the other folds, with and without calibrating
    every fold model first (temperature scaling on its own validation fold)."""
    jobs = [job for folds in seeds.values() for job in folds.values()]
    # Each fold model's temperature, fitted once on its own validation fold.
    vals_of_jobs = [job.val for job in jobs]
    temperature = {id(v): fit_temperature(v.probabilities, v.labels) for v in vals_of_jobs}
    kinds: dict[str, list[list[SplitPredictions]]] = {"raw": [], "calibrated": []}
    for folds in seeds.values():
        vals = [folds[fold].val for fold in sorted(folds)]
        kinds["raw"].append(vals)
        kinds["calibrated"].append([
            replace(v, probabilities=apply_temperature(v.probabilities, temperature[id(v)]))
            for v in vals
        ])  # fmt: skip
    result = {}
    for criterion in CRITERIA:
        raw, calibrated, sensitivity, specificity = [], [], [], []
        for job in jobs:
            threshold = _threshold(job.val, criterion)
            raw.append(threshold)
            # Temperature scaling is monotone: the same decisions, but a threshold in calibrated
            # probability, which is comparable across models.
            point = apply_temperature(np.array([threshold]), temperature[id(job.val)])
            calibrated.append(float(point[0]))
            at = binary_metrics_at(job.test.probabilities, job.test.labels, threshold)
            sensitivity.append(at["recall"])
            specificity.append(at["specificity"])
        carried: dict[str, list[float]] = defaultdict(list)
        for kind, per_seed in kinds.items():
            for parts in per_seed:
                sens, spec = _per_fold_calls(parts, criterion)
                carried[f"cv_sensitivity_{kind}"] += sens
                carried[f"cv_specificity_{kind}"] += spec
        result[criterion] = {
            "threshold": stat(raw),
            "threshold_calibrated": stat(calibrated),
            "held_out_sensitivity": stat(sensitivity),
            "held_out_sensitivity_min": Stat(min(sensitivity), None, len(sensitivity)),
            "held_out_specificity": stat(specificity),
            **{key: stat(values) for key, values in carried.items()},
            **{
                f"{key}_min": Stat(min(values), None, len(values))
                for key, values in carried.items()
                if key.startswith("cv_sensitivity")
            },
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
            "operating_points": operating_points(complete),
            "fold_auroc": {
                f"{seed}/{fold}": auroc(job.val.probabilities, job.val.labels)
                for seed, folds in complete.items()
                for fold, job in folds.items()
            },
            "cv_by_seed": {str(seed): row for seed, row in zip(complete, cv, strict=True)},
        }
    return summary


def paired_gain(item: Mapping[str, object], baseline: Mapping[str, object]) -> Stat | None:
    """Per-fold validation AUROC minus the baseline's on the same fold and seed: mean ± std."""
    mine, theirs = item["fold_auroc"], baseline["fold_auroc"]
    if item is baseline:
        # Its own noise: each other seed's fold model against seed 0's on the same fold.
        pairs = [(k, "0/" + k.split("/")[1]) for k in mine if not k.startswith("0/")]
    else:
        pairs = [(k, k) for k in mine if k in theirs]
    return stat(mine[a] - theirs[b] for a, b in pairs) if pairs else None


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
    low, high = stats[f"{key}_ci_low"].mean, stats[f"{key}_ci_high"].mean
    return f"{stats[key].text()} [{low:.3f}, {high:.3f}]"


HEADLINE = ("auroc", "recall", "specificity", "f1")


def render(summary: Mapping[str, Mapping[str, object]]) -> str:
    lines = [
        "# Cross-validated recipe studies",
        "",
        "Mean ± sample std over seeds where a variant has several; [low, high] is the patient "
        "bootstrap 95% interval (its bounds averaged over seeds). CV = the pooled out-of-fold "
        "predictions of 5 patient-grouped folds of train+val: AUROC over all of them, and "
        "sensitivity, specificity and F1 where each fold is called at the Youden threshold of "
        "the other folds. Per-fold val AUROC = mean ± std over every fold model (folds and "
        "seeds); Δ = its difference from the baseline's model of the same fold and seed "
        "(paired; for the baseline, seeds 1 and 2 against seed 0: the noise). Job h = the "
        "jobs' wall hours, one thread each (an upper bound on CPU hours on a shared machine). "
        "Held-out = the fold ensemble (mean probability of the 5 fold "
        "models) on the fixed patient-grouped held-out set at the pooled out-of-fold Youden "
        "threshold.",
        "",
        "## Cross-validated (what the recipes are chosen by)",
        "",
    ]
    rows = []
    baseline = summary.get(BASELINE)
    for name, item in summary.items():
        cv = item["cv"]
        gain = None if baseline is None else paired_gain(item, baseline)
        rows.append([
            name, ",".join(map(str, item["seeds"])), str(item["folds"]),
            *(_ci(cv, f"cv/{key}") for key in HEADLINE),
            item["fold_val_auroc"].text(), "" if gain is None else f"{gain.text()} ({gain.n})",
            f"{item['cpu_hours']:.2f}",
        ])  # fmt: skip
        if len(item["seeds"]) > 1:
            for seed, row in item["cv_by_seed"].items():
                rows.append([
                    f"{name} seed {seed}", seed, str(item["folds"]),
                    *(f"{row[f'cv/{key}']:.3f}" for key in HEADLINE), "", "", "",
                ])  # fmt: skip
    header = ["variant", "seeds", "folds", "CV AUROC", "CV sensitivity", "CV specificity"]
    header += ["CV F1", "per-fold val AUROC", "Δ per-fold AUROC vs baseline (n)", "job h"]
    lines += _table(header, rows)
    lines += ["", "## Held-out fold ensemble (read after choosing, never to choose)", ""]
    rows = []
    for name, item in summary.items():
        held = item["held_out"]
        rows.append([
            name, *(_ci(held, f"held_out/{key}") for key in HEADLINE),
            held["single_auroc_mean"].text(), held["threshold"].text(),
        ])  # fmt: skip
    header = ["variant", "AUROC", "sensitivity", "specificity", "F1"]
    lines += _table([*header, "single-model AUROC", "threshold"], rows)
    lines += [
        "",
        "## Operating point per fold model (its own validation fold; all folds and seeds)",
        "",
        "sens>=x = the highest threshold keeping validation sensitivity >= x."
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
    lines += [
        "",
        "## Operating point carried to unseen folds (cross-validated, validation data only)",
        "",
        "Each fold called at the threshold the criterion chooses on the other folds' "
        "out-of-fold predictions; mean ± std (min) over folds and seeds. Calibrated: every fold "
        "model's probabilities temperature-scaled on its own validation fold first.",
        "",
    ]
    rows = []
    for name, item in summary.items():
        for criterion, points in item["operating_points"].items():
            rows.append([
                name, criterion,
                *(
                    f"{points[f'cv_sensitivity_{kind}'].text()} "
                    f"({points[f'cv_sensitivity_{kind}_min'].mean:.3f})"
                    for kind in ("raw", "calibrated")
                ),
                points["cv_specificity_raw"].text(), points["cv_specificity_calibrated"].text(),
            ])  # fmt: skip
    header = ["variant", "criterion", "sens (min)", "sens calibrated (min)", "spec"]
    lines += _table([*header, "spec calibrated"], rows)
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


def write_outputs(out: Path | None, stem: str, text: str, data: object) -> None:
    """Print ``text``; with ``out``, keep it as ``<stem>.md`` and ``data`` as ``<stem>.json``."""
    print(text)
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(_plain(data), indent=2) + "\n")


def write_analysis(out: Path | str) -> dict[str, object]:
    out = Path(out)
    jobs = collect_jobs(out)
    if not jobs:
        raise SystemExit(f"no completed jobs under {out / 'runs'}")
    summary = summarize(jobs)
    compare(out, sorted((out / "runs").glob("*/*")))
    write_outputs(out, "analysis", render(summary), summary)
    return summary


if __name__ == "__main__":
    write_analysis(sys.argv[1] if len(sys.argv) > 1 else "logs/cv_studies")
