"""The adult-transfer numbers, per arm, overall and within each view, from the prediction files.

For a fold arm (``<out>/runs/<arm>/``, one job per fold):

- **adult, cross-validated**: the pooled out-of-fold predictions on the 416 adult NORMAL and
  PNEUMONIA films (each scored once, by the fold model that never trained on it): AUROC with a
  bootstrap interval (every film is its own patient), and sensitivity and specificity where each
  fold is called at the threshold chosen (``threshold.criterion`` of the recipe, F1) on the
  *other* folds' out-of-fold predictions, so no film is called at a threshold fitted to it.
  Everything again within PA films and within AP films: the view predicts the label in this set
  (NORMAL 188 PA / 41 AP, PNEUMONIA 39 PA / 148 AP), so the within-view AUROC is the one a
  portable-film detector cannot win;
- **calibration**: expected calibration error of the pooled out-of-fold probabilities;
- **OTHER_ABNORMAL**: the share of the 333 films of that class called pneumonia, each by the
  fold model that never trained on it, at that model's own (validation-chosen) threshold;
- **children**: the mean over the 5 fold models of the AUROC on the pediatric held-out films,
  which no arm trains on; the mean (sd) of each job's wall time is the cost.

A pediatric arm is one model, scored on every adult film by ``cxrnet-eval``: the same numbers at
its own (pediatric-validation) threshold.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from arms import ARMS, CHOSEN, FEW, LEARNING_CURVE, Arm

from cxrnet.evaluation.bootstrap import PatientDraws, bootstrap_weighted
from cxrnet.evaluation.calibration import reliability
from cxrnet.evaluation.confusion import confusion_at
from cxrnet.evaluation.curves import RankedScores, auroc
from cxrnet.evaluation.report import SplitPredictions, read_predictions
from cxrnet.evaluation.thresholds import ThresholdRule
from cxrnet.passes.fold_ensemble import (
    cross_fitted_thresholds,
    find_fold_members,
    fold_validation,
    pooled_out_of_fold,
)
from cxrnet.runs.record import RunRecord, read_record

VIEWS = ("all", "PA", "AP")
RESAMPLES = 1000
RULE = ThresholdRule("f1")  # experiment=best's threshold criterion, as every fold arm uses
ADULT_EVAL = "eval_adult"
OTHER_PREDICTIONS = "predictions_other.csv"
PNEUMONIA = "PNEUMONIA"


@dataclass(frozen=True)
class ArmResult:
    arm: Arm
    jobs: int
    adult: dict[str, dict[str, float]]  # view -> metric -> value
    other_flagged: dict[str, float]  # view -> share of OTHER_ABNORMAL films called pneumonia
    other_films: int
    peds_auroc: float
    peds_auroc_sd: float
    seconds: float
    seconds_sd: float
    # The adult films' probabilities (out-of-fold, or the one model's), for paired comparisons.
    predictions: SplitPredictions
    # Each OTHER_ABNORMAL film's call (path -> called pneumonia) and view, for paired flag rates.
    other_calls: dict[str, tuple[bool, str]] = field(default_factory=dict)


def _subset(predictions: SplitPredictions, mask: np.ndarray) -> SplitPredictions:
    keep = np.flatnonzero(mask)

    def pick(values: Sequence[str] | None) -> tuple[str, ...] | None:
        return None if values is None else tuple(values[i] for i in keep)

    return replace(
        predictions,
        probabilities=predictions.probabilities[keep],
        labels=predictions.labels[keep],
        files=pick(predictions.files),
        subtypes=pick(predictions.subtypes),
        patients=pick(predictions.patients),
        columns={name: pick(values) for name, values in predictions.columns.items()},
    )


def _view_mask(predictions: SplitPredictions, view: str) -> np.ndarray:
    if view == "all":
        return np.ones(len(predictions), dtype=bool)
    return np.asarray(predictions.columns.get("view", ()), dtype=object) == view


def scores(predictions: SplitPredictions, thresholds: np.ndarray) -> dict[str, float]:
    """AUROC, sensitivity, specificity (at per-film thresholds) and ECE, with intervals."""
    p, y = predictions.probabilities, predictions.labels
    called = p >= thresholds
    ranked = RankedScores.of(p, y)

    def resampled(draws: PatientDraws) -> dict[str, np.ndarray]:
        # A block of resamples at once, from per-film weights: no film is copied or re-sorted.
        counts = confusion_at(called, y, draws.weights()).metrics()
        auroc_ = ranked.tally(draws.weights).auroc()
        return {
            "auroc": auroc_,
            "sensitivity": counts["recall"],
            "specificity": counts["specificity"],
        }

    values = {"auroc": auroc(p, y)}
    counts = confusion_at(called, y).metrics()
    values |= {"sensitivity": counts["recall"], "specificity": counts["specificity"]}
    intervals = bootstrap_weighted(
        resampled, len(p), groups=predictions.patients, resamples=RESAMPLES, seed=0
    )
    for name, (low, high) in intervals.items():
        values[f"{name}_low"], values[f"{name}_high"] = float(low), float(high)
    values["ece"] = reliability(p, y).ece
    values["films"] = len(p)
    values["pneumonia"] = int(y.sum())
    return {k: float(v) for k, v in values.items()}


def per_view(predictions: SplitPredictions, thresholds: np.ndarray) -> dict[str, dict[str, float]]:
    result = {}
    for view in VIEWS:
        mask = _view_mask(predictions, view)
        result[view] = scores(_subset(predictions, mask), thresholds[mask])
    return result


def paired_delta(first: SplitPredictions, second: SplitPredictions) -> dict[str, float]:
    """AUROC of ``first`` minus ``second`` on the same adult films, per view, with a paired
    bootstrap interval (the same films resampled for both): the comparison of two recipes that
    the films' own difficulty does not blur."""
    position = {file: i for i, file in enumerate(second.files)}
    if set(position) != set(first.files):
        raise ValueError("the two arms scored different adult films: no paired comparison")
    order = np.array([position[file] for file in first.files])
    other = second.probabilities[order]
    result = {}
    for view in VIEWS:
        mask = _view_mask(first, view)
        p, q, y = first.probabilities[mask], other[mask], first.labels[mask]
        first_ranked, second_ranked = RankedScores.of(p, y), RankedScores.of(q, y)

        def delta(draws: PatientDraws, a=first_ranked, b=second_ranked) -> dict[str, np.ndarray]:
            # The same resampled films for both arms: the pairing the interval is about.
            return {"delta": a.tally(draws.weights).auroc() - b.tally(draws.weights).auroc()}

        low, high = bootstrap_weighted(delta, len(y), resamples=RESAMPLES, seed=0)["delta"]
        result[view] = auroc(p, y) - auroc(q, y)
        result[f"{view}_low"], result[f"{view}_high"] = float(low), float(high)
    return result


def _calls(rows: Sequence[Mapping[str, str]]) -> dict[str, tuple[bool, str]]:
    return {row["path"]: (row["prediction"] == PNEUMONIA, row.get("view", "")) for row in rows}


def paired_flag_delta(first: ArmResult, second: ArmResult) -> dict[str, float]:
    """The share of OTHER_ABNORMAL films ``first`` flags minus ``second``'s, per view, on the
    same films (each its own patient), with a paired bootstrap interval."""
    if set(first.other_calls) != set(second.other_calls) or not first.other_calls:
        raise ValueError("the two arms scored different OTHER_ABNORMAL films: no paired rate")
    paths = sorted(first.other_calls)
    result = {}
    for view in VIEWS:
        chosen = [p for p in paths if view == "all" or first.other_calls[p][1] == view]
        a = np.array([first.other_calls[p][0] for p in chosen], dtype=np.float64)
        b = np.array([second.other_calls[p][0] for p in chosen], dtype=np.float64)

        def delta(draws: PatientDraws, a=a, b=b) -> dict[str, np.ndarray]:
            w = draws.weights()
            total = w.sum(axis=1)
            return {"delta": (w @ a - w @ b) / np.where(total > 0, total, np.nan)}

        low, high = bootstrap_weighted(delta, len(a), resamples=RESAMPLES, seed=0)["delta"]
        result[view] = float(a.mean() - b.mean()) if len(a) else math.nan
        result[f"{view}_low"], result[f"{view}_high"] = float(low), float(high)
    return result


def _flagged(rows: Sequence[Mapping[str, str]]) -> dict[str, float]:
    result = {}
    for view in VIEWS:
        chosen = [row for row in rows if view == "all" or row.get("view") == view]
        called = sum(row["prediction"] == PNEUMONIA for row in chosen)
        result[view] = called / len(chosen) if chosen else math.nan
    return result


def _read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _record(job_dir: Path) -> RunRecord:
    record = read_record(job_dir)
    if record is None:
        raise FileNotFoundError(f"{job_dir} holds no run record (metrics.json)")
    return record


def _mean_sd(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan


def fold_arm(arm: Arm, folder: Path) -> ArmResult:
    members, _ = find_fold_members(folder)
    parts = fold_validation(members)
    pooled = pooled_out_of_fold(parts)
    thresholds = cross_fitted_thresholds(parts, RULE)
    others = [row for m in members for row in _read_rows(m.run_dir / OTHER_PREDICTIONS)]
    # find_fold_members read each job's record already (and a completed job has one).
    records = [m.run.record for m in members if m.run.record is not None]
    peds = _mean_sd([r.metrics["test/auroc"] for r in records])
    cost = _mean_sd([r.duration_s for r in records])
    return ArmResult(
        arm, len(members), per_view(pooled, thresholds), _flagged(others), len(others),
        *peds, *cost, pooled, _calls(others),
    )  # fmt: skip


def pediatric_arm(arm: Arm, folder: Path) -> ArmResult:
    job = folder / "0"  # the runner's one training job; the adult evaluation beside it
    evaluation = folder / ADULT_EVAL
    adult = read_predictions(evaluation / "predictions_test.csv")
    record = _record(job)
    threshold = record.metrics["val/threshold"]
    others = _read_rows(evaluation / "predictions_other_classes.csv")
    return ArmResult(
        arm, 1, per_view(adult, np.full(len(adult), threshold)), _flagged(others), len(others),
        record.metrics["test/auroc"], math.nan, record.duration_s, math.nan, adult,
    )  # fmt: skip


def collect(out: Path) -> tuple[list[ArmResult], list[str]]:
    """Every finished arm; the others are listed with why they were left out."""
    results, missing = [], []
    for arm in ARMS:
        folder = out / "runs" / arm.name
        if not folder.is_dir():
            missing.append(f"{arm.name}: not run")
            continue
        try:
            read = fold_arm if arm.folds else pediatric_arm
            results.append(read(arm, folder))
        except (OSError, ValueError, KeyError) as error:
            missing.append(f"{arm.name}: {type(error).__name__}: {error}")
    return results, missing


# --- tables -----------------------------------------------------------------------------------


def _ci(values: Mapping[str, float], name: str) -> str:
    value = values.get(name, math.nan)
    if not math.isfinite(value):
        return "-"
    return f"{value:.3f} [{values[f'{name}_low']:.2f}, {values[f'{name}_high']:.2f}]"


def _cell(value: float, sd: float = math.nan, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _auroc_cells(result: ArmResult) -> list[str]:
    return [_ci(result.adult[view], "auroc") for view in VIEWS]


def _operating_cells(result: ArmResult) -> list[str]:
    cells = []
    for view in VIEWS:
        values = result.adult[view]
        cells.append(f"{values['sensitivity']:.2f} / {values['specificity']:.2f}")
    return cells


def _per_view(values: Mapping[str, float], digits: int) -> str:
    return " / ".join(_cell(values[view], digits=digits) for view in VIEWS)


def _row(result: ArmResult, label: str) -> list[str]:
    return [
        label,
        *_auroc_cells(result),
        *_operating_cells(result),
        _per_view({view: result.adult[view]["ece"] for view in VIEWS}, 3),
        _per_view(result.other_flagged, 2),
        _cell(result.peds_auroc, result.peds_auroc_sd),
        _cell(result.seconds, result.seconds_sd, digits=0),
    ]


MAIN_HEADER = (
    "arm", "AUROC all", "AUROC PA", "AUROC AP", "sens / spec all", "sens / spec PA",
    "sens / spec AP", "ECE all / PA / AP", "OTHER_ABNORMAL flagged all / PA / AP",
    "children AUROC", "s per model",
)  # fmt: skip


def _curve_table(by_name: Mapping[str, ArmResult]) -> str:
    rows = []
    for n in LEARNING_CURVE:
        size = "all" if n is None else str(n)
        row = [size]
        for kind in ("joint", "adult", "finetune"):
            result = by_name.get(f"{kind}_{size}")
            row += _auroc_cells(result) if result else ["-"] * len(VIEWS)
        rows.append(row)
    header = ["adult films per fold"] + [
        f"{kind} {view}" for kind in ("joint", "adult-only", "fine-tune") for view in VIEWS
    ]
    return _table(header, rows)


def comparisons() -> list[tuple[str, str]]:
    """(arm, the arm it is read against): each variant against joint training with as many
    adult films, adult-only and fine-tuning against joint at each size, and joint training
    against the pediatric model it would replace."""
    pairs = [(arm.name, f"joint_{FEW}") for arm in ARMS if arm.group == "variants"]
    pairs += [(arm.name, CHOSEN) for arm in ARMS if arm.group == "findings"]
    for n in LEARNING_CURVE:
        size = "all" if n is None else str(n)
        pairs.append((f"joint_{size}", "peds_best"))
        if n != 0:
            pairs += [(f"adult_{size}", f"joint_{size}"), (f"finetune_{size}", f"joint_{size}")]
    return pairs


def paired_rows(by_name: Mapping[str, ArmResult]) -> dict[tuple[str, str], dict[str, float]]:
    rows = {}
    for first, second in comparisons():
        if first in by_name and second in by_name:
            rows[(first, second)] = paired_delta(
                by_name[first].predictions, by_name[second].predictions
            )
    return rows


def paired_flag_rows(
    by_name: Mapping[str, ArmResult],
) -> dict[tuple[str, str], dict[str, float]]:
    """The findings arms' flag rates on the OTHER_ABNORMAL films against the reference's."""
    rows = {}
    for first, second in comparisons():
        a, b = by_name.get(first), by_name.get(second)
        if a and b and a.arm.group == "findings" and a.other_calls and b.other_calls:
            rows[(first, second)] = paired_flag_delta(a, b)
    return rows


def _paired_table(what: str, paired: Mapping[tuple[str, str], Mapping[str, float]]) -> str:
    header = ["arm", "reference", *(f"{what} {view}" for view in VIEWS)]
    rows = [
        [f"`{a}`", f"`{b}`", *(_delta_cell(values, view) for view in VIEWS)]
        for (a, b), values in paired.items()
    ]
    return _table(header, rows)


def _delta_cell(values: Mapping[str, float], view: str) -> str:
    return f"{values[view]:+.3f} [{values[f'{view}_low']:+.2f}, {values[f'{view}_high']:+.2f}]"


def render(results: Sequence[ArmResult], missing: Sequence[str]) -> str:
    by_name = {r.arm.name: r for r in results}
    sections = ["# Adult transfer: results\n", "Written by `analysis.py`; read it beside the "
                "study README's design. AUROC [95% bootstrap interval]; sensitivity and "
                "specificity at a threshold not chosen on the film (fold arms: cross-fitted; "
                "pediatric arms: their pediatric validation threshold).\n"]  # fmt: skip
    groups = (
        ("pediatric", "How far a pediatric-only model carries (every adult film)"),
        ("curve", "Learning curve: joint, adult-only and fine-tuned (5-fold CV)"),
        ("variants", f"What helps with {FEW} adult films per fold (joint training, 5-fold CV)"),
        ("findings", "Every finding as its own output (issue 28; 5-fold CV)"),
    )
    for group, title in groups:
        chosen = [r for r in results if r.arm.group == group]
        if group == "variants" and f"joint_{FEW}" in by_name:
            chosen.insert(0, by_name[f"joint_{FEW}"])
        if group == "findings" and chosen and CHOSEN in by_name:
            chosen.insert(0, by_name[CHOSEN])
        if not chosen:
            continue
        sections.append(f"## {title}\n")
        rows = [_row(r, f"`{r.arm.name}`: {r.arm.note}") for r in chosen]
        sections.append(_table(MAIN_HEADER, rows))
        if group == "curve":
            sections.append("\nAUROC by adult training films per fold:\n\n" + _curve_table(by_name))
    paired = paired_rows(by_name)
    if paired:
        sections.append(
            "## Paired differences on the same adult films\n\nAUROC of the arm minus the "
            "reference's, [95% paired bootstrap interval]: an interval that excludes 0 is a "
            "difference these 416 films can show.\n"
        )
        sections.append(_paired_table("Δ AUROC", paired))
    flags = paired_flag_rows(by_name)
    if flags:
        sections.append(
            "\nShare of the OTHER_ABNORMAL films flagged as pneumonia, the arm minus the "
            "reference, on the same films (each scored by the fold model that never trained on "
            "it) [95% paired bootstrap interval]:\n"
        )
        sections.append(_paired_table("Δ flagged", flags))
    if missing:
        sections.append("## Not (yet) available\n\n" + "\n".join(f"- {m}" for m in missing) + "\n")
    return "\n".join(sections)


def as_json(results: Sequence[ArmResult]) -> dict:
    return {
        r.arm.name: {
            "note": r.arm.note, "kind": r.arm.kind, "adult_films": r.arm.adult,
            "overrides": list(r.arm.overrides), "jobs": r.jobs, "adult": r.adult,
            "other_abnormal_flagged": r.other_flagged, "other_abnormal_films": r.other_films,
            "children_auroc": r.peds_auroc, "children_auroc_sd": r.peds_auroc_sd,
            "seconds_per_model": r.seconds, "seconds_sd": r.seconds_sd,
        }
        for r in results
    }  # fmt: skip


def write_analysis(out: Path, results_dir: Path | None = None) -> Path:
    results_dir = results_dir or Path(__file__).resolve().parent / "results"
    results, missing = collect(out)
    results_dir.mkdir(parents=True, exist_ok=True)
    data = as_json(results)
    by_name = {r.arm.name: r for r in results}
    data["paired"] = {f"{a} - {b}": values for (a, b), values in paired_rows(by_name).items()}
    data["paired_flagged"] = {
        f"{a} - {b}": values for (a, b), values in paired_flag_rows(by_name).items()
    }
    payload = json.dumps(data, indent=1, allow_nan=True) + "\n"
    (results_dir / "analysis.json").write_text(payload)
    # Each arm's sweeps (command, exit code, wall time, load), as the runner logged them.
    logs = {path.stem: json.loads(path.read_text()) for path in sorted(out.glob("study/*.json"))}
    (results_dir / "study.json").write_text(json.dumps(logs, indent=1) + "\n")
    (results_dir / "analysis.md").write_text(render(results, missing))
    print(render(results, missing))
    return results_dir
