"""The k models of a k-fold sweep as one ensemble: its members checked, its threshold chosen on
their pooled out-of-fold validation predictions, and its held-out predictions and report
numbers (``build_fold_ensemble``). The folder ``cxrnet-ensemble`` writes from them is
``ensemble_folder``'s.

Only what ``cxrnet-train`` wrote in each job folder is read (``metrics.json``, ``config.yaml``,
``predictions_val.csv``, ``predictions_test.csv``); no network runs here. Each fold model has
already scored its own validation fold and the shared held-out set in its evaluation pass, so
the pooled out-of-fold predictions are those validation files put together, and the ensemble's
held-out probability of a film is the mean of the members' (``mean_probability``, the same
rule ``cxrnet-predict`` applies to new films).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cxrnet.data.findings import TRIAGE_FINDING as TRIAGE
from cxrnet.evaluation.bootstrap import bootstrap_intervals
from cxrnet.evaluation.confusion import confusion_at
from cxrnet.evaluation.curves import auroc
from cxrnet.evaluation.finding_report import pooled_finding_thresholds, read_finding_predictions
from cxrnet.evaluation.probabilities import mean_probability
from cxrnet.evaluation.report import (
    EvaluationReport,
    ReportSettings,
    SplitPredictions,
    evaluate_predictions,
    read_predictions,
)
from cxrnet.evaluation.thresholds import (
    ThresholdRule,
    choose_operating_point,
)
from cxrnet.runs import Override
from cxrnet.runs.results import UNREADABLE, RunResult, collect_runs
from cxrnet.user_errors import EnsembleError

# Split names of the ensemble's report: the pooled single-model validation scores, and the
# ensemble's mean on the held-out (test) set.
OOF = "oof"
HELD_OUT = "test"
CHOSEN_ON = "pooled out-of-fold validation"
# The cross-validated estimate (metric keys ``cv/...``): AUROC of the pooled out-of-fold
# predictions, and sensitivity, specificity, precision, F1 and accuracy of cross-fitted calls.
CROSS_VALIDATED = "cv"


@dataclass(frozen=True)
class FoldMember:
    """One completed fold job: where it ran and the checkpoint it chose on its validation fold."""

    fold: int
    run: RunResult
    checkpoint: Path

    @property
    def run_dir(self) -> Path:
        return self.run.path


@dataclass(frozen=True)
class FoldEnsemble:
    members: tuple[FoldMember, ...]
    num_folds: int
    report: EvaluationReport  # splits OOF and, where the data has one, HELD_OUT


def _rerun_hint(run: RunResult) -> str:
    return f"rerun it in its folder (cxrnet-train <its overrides> hydra.run.dir={run.path})"


def find_fold_members(sweep_dir: Path | str) -> tuple[list[FoldMember], int]:
    """Every fold of the k-fold sweep in ``sweep_dir``, once each, completed, sorted by fold.

    Anything less is an ``EnsembleError`` naming the fold: an ensemble of the folds that
    happened to finish would be another model than the one the sweep was asked for.
    """
    try:
        runs = collect_runs([sweep_dir])
    except FileNotFoundError as error:
        raise EnsembleError(str(error)) from error
    if not runs:
        raise EnsembleError(f"no job folders in {sweep_dir}: pass the folder cxrnet-train -m wrote")
    by_fold, k = _one_run_per_fold(runs, sweep_dir)
    members = []
    for fold, run in sorted(by_fold.items()):
        checkpoint = job_checkpoint(run)
        if checkpoint is None or not checkpoint.is_file():
            raise EnsembleError(
                f"fold {fold}: its best checkpoint {checkpoint} is missing; {_rerun_hint(run)}"
            )
        members.append(FoldMember(fold, run, checkpoint))
    return members, k


def _one_run_per_fold(
    runs: Sequence[RunResult], sweep_dir: Path | str
) -> tuple[dict[int, RunResult], int]:
    """Each fold's one completed job, by fold, and the sweep's k; otherwise an ``EnsembleError``
    naming every fold that is unreadable, unfinished or missing (so one rerun fixes them all),
    or the jobs that make this not one k-fold sweep."""
    by_fold: dict[int, list[RunResult]] = {}
    num_folds: set[int] = set()
    problems: list[str] = []
    for run in runs:
        if run.status == UNREADABLE:  # its fold cannot even be told
            problems.append(f"job {run.path} is unreadable ({run.error}); {_rerun_hint(run)}")
            continue
        split, fold = run.value("data.split"), run.value("data.fold")
        k = run.value("data.num_folds")
        if split != "kfold" or not isinstance(fold, int) or not isinstance(k, int):
            raise EnsembleError(
                f"job {run.path} ran with data.split={split}, not a k-fold split: a fold "
                "ensemble needs the jobs of one k-fold sweep (cxrnet-train -m experiment=best_cv)"
            )
        num_folds.add(k)
        by_fold.setdefault(fold, []).append(run)
        if not run.completed:
            problems.append(f"fold {fold} {run.status} ({run.error}); {_rerun_hint(run)}")
    if not num_folds:
        raise EnsembleError("the ensemble needs every fold: " + "; ".join(problems))
    if len(num_folds) > 1:
        raise EnsembleError(
            f"the jobs in {sweep_dir} mix data.num_folds={sorted(num_folds)}: one sweep, one k"
        )
    (k,) = num_folds
    twice = {fold: runs for fold, runs in by_fold.items() if len(runs) > 1}
    if twice:
        where = "; ".join(
            f"fold {fold} in {', '.join(str(run.path) for run in runs)}"
            for fold, runs in sorted(twice.items())
        )
        raise EnsembleError(
            f"{where}: one model per fold (sweep seeds or other settings in separate sweeps)"
        )
    missing = sorted(set(range(k)) - set(by_fold))
    if missing:
        problems.append(
            f"fold{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} of {k} "
            f"missing from {sweep_dir} (no job folder trained it)"
        )
    if problems:
        raise EnsembleError("the ensemble needs every fold: " + "; ".join(problems))
    return {fold: run for fold, (run,) in by_fold.items()}, k


def job_checkpoint(run: RunResult) -> Path | None:
    """The job's best checkpoint in the folder being read.

    The record stores the absolute path the job wrote, in the folder it ran in. A sweep that was
    copied, moved or synced since is read where it is now: a checkpoint that was inside the job's
    folder is found at the same place inside ``run.path``, never in the original folder (which
    may be gone, or another copy).
    """
    record = run.record
    stored = (record.paths if record else {}).get("best_checkpoint")
    if not stored:
        return None
    checkpoint = Path(stored)
    if record is not None and record.run_dir:
        try:
            return run.path / checkpoint.relative_to(record.run_dir)
        except ValueError:  # written outside its job folder: only the stored path can say where
            pass
    return checkpoint


def _read(member: FoldMember, split: str) -> SplitPredictions:
    path = member.run_dir / f"predictions_{split}.csv"
    if not path.is_file():
        raise EnsembleError(f"fold {member.fold}: {path} is missing; {_rerun_hint(member.run)}")
    try:
        return read_predictions(path)
    except ValueError as error:
        raise EnsembleError(f"fold {member.fold}: {error}") from error


def fold_validation(members: Sequence[FoldMember]) -> list[SplitPredictions]:
    """Each fold model's predictions on its own validation fold, in the members' order."""
    return [_read(member, "val") for member in members]


def pooled_out_of_fold(parts: Sequence[SplitPredictions]) -> SplitPredictions:
    """The folds' validation predictions put together: each film of train+val scored once, by
    the one model that never trained on it."""
    files = [file for part in parts for file in part.files]
    if len(set(files)) != len(files):
        raise EnsembleError("the folds' validation sets overlap: these jobs are not one k-fold")
    patients = [part.patients for part in parts]
    # Metadata columns (view, age ...) travel along for the subgroup report; "" where a fold's
    # films lack one.
    names = sorted({name for part in parts for name in part.columns})
    columns = {
        name: tuple(v for part in parts for v in part.columns.get(name, ("",) * len(part)))
        for name in names
    }
    return SplitPredictions(
        np.concatenate([part.probabilities for part in parts]),
        np.concatenate([part.labels for part in parts]),
        tuple(files),
        tuple(subtype for part in parts for subtype in part.subtypes),
        None if any(p is None for p in patients) else tuple(x for p in patients for x in p),
        columns,
    )


def cross_fitted_thresholds(parts: Sequence[SplitPredictions], rule: ThresholdRule) -> np.ndarray:
    """Per pooled film, the threshold ``rule`` chooses on the *other* folds' out-of-fold
    predictions: no film is called at a threshold fitted to its own score, so the
    cross-validated sensitivity, specificity and F1 are not flattered by the choice."""
    thresholds = []
    for i, part in enumerate(parts):
        others = pooled_out_of_fold([other for j, other in enumerate(parts) if j != i])
        point = choose_operating_point(others.probabilities, others.labels, rule)
        thresholds.append(np.full(len(part), point.threshold))
    return np.concatenate(thresholds)


def cross_validated_metrics(
    pooled: SplitPredictions, thresholds: np.ndarray, settings: ReportSettings
) -> dict[str, float]:
    """``cv/<metric>`` with ``_ci_low``/``_ci_high`` (patient bootstrap) from pooled out-of-fold
    predictions called at per-film (cross-fitted) thresholds."""

    def score(indices: np.ndarray) -> dict[str, float]:
        p, y = pooled.probabilities[indices], pooled.labels[indices]
        return {**confusion_at(p >= thresholds[indices], y).metrics(), "auroc": auroc(p, y)}

    everything = np.arange(len(pooled))
    intervals = bootstrap_intervals(
        score,
        len(pooled),
        groups=pooled.patients,
        resamples=settings.resamples,
        seed=settings.seed,
        level=settings.level,
    )
    metrics = {}
    for name, value in score(everything).items():
        key = f"{CROSS_VALIDATED}/{name}"
        metrics[key] = float(value)
        metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = map(float, intervals[name])
    return metrics


def ensemble_held_out(members: Sequence[FoldMember]) -> SplitPredictions | None:
    """The members' mean probability per held-out film; None when the data has no test split."""
    present = [(member.run_dir / f"predictions_{HELD_OUT}.csv").is_file() for member in members]
    if not any(present):
        return None
    parts = [_read(member, HELD_OUT) for member in members]
    return mean_over_members(parts, [f"fold {member.fold}" for member in members])


def mean_over_members(parts: Sequence[SplitPredictions], names: Sequence[str]) -> SplitPredictions:
    """Several models' predictions on one set of films as their mean, films in name order.

    ``names`` say which model each part is, for the error when one scored other films.
    """
    aligned = []
    for part in parts:
        order = np.argsort(np.asarray(part.files), kind="stable")
        aligned.append((part, order))
    first, first_order = aligned[0]
    files = tuple(np.asarray(first.files)[first_order])
    for name, (part, order) in zip(names[1:], aligned[1:], strict=True):
        if tuple(np.asarray(part.files)[order]) != files:
            raise EnsembleError(
                f"{name} was tested on other films than {names[0]}: "
                "the held-out set must be the same for every fold (data.holdout_seed fixed)"
            )
    return SplitPredictions(
        mean_probability([part.probabilities[order] for part, order in aligned]),
        first.labels[first_order],
        files,
        tuple(np.asarray(first.subtypes)[first_order]),
        None if first.patients is None else tuple(np.asarray(first.patients)[first_order]),
        {name: tuple(map(str, np.asarray(v)[first_order])) for name, v in first.columns.items()},
    )


def build_fold_ensemble(
    sweep_dir: Path | str, rule: ThresholdRule, settings: ReportSettings | None = None
) -> FoldEnsemble:
    """The ensemble of the sweep's fold models with its operating point and report numbers."""
    settings = settings or ReportSettings()
    members, k = find_fold_members(sweep_dir)
    parts = fold_validation(members)
    oof = pooled_out_of_fold(parts)
    # The threshold is chosen on single-model scores (each film scored by the one fold model
    # that did not train on it) and applied to the ensemble's mean probability: validation
    # data that no member has seen does not exist for the ensemble itself, and the mean of k
    # similar models scores much like one of them. Its held-out numbers show how well it carries.
    try:
        point = choose_operating_point(oof.probabilities, oof.labels, rule, chosen_on=CHOSEN_ON)
        cross_fitted = cross_fitted_thresholds(parts, rule)
    except ValueError as error:
        raise EnsembleError(f"pooled out-of-fold predictions of {sweep_dir}: {error}") from error
    predictions = {OOF: oof}
    held_out = ensemble_held_out(members)
    if held_out is not None:
        predictions[HELD_OUT] = held_out
    report = evaluate_predictions(predictions, operating_point=point, settings=settings)
    # The oof/*_at_threshold numbers are in-sample (the threshold was chosen on these very
    # predictions); the cross-validated ones call each fold at the other folds' threshold.
    report.metrics |= cross_validated_metrics(oof, cross_fitted, settings)
    if any(member.run.value("data.task") == "findings" for member in members):
        # A findings sweep: each finding's threshold on the pooled out-of-fold predictions too.
        try:
            parts = [read_finding_predictions(m.run_dir / "findings_val.csv") for m in members]
            report.finding_thresholds = pooled_finding_thresholds(parts, rule, TRIAGE, point)
        except ValueError as error:
            raise EnsembleError(f"{sweep_dir}: {error}; {_rerun_hint(members[0].run)}") from error
    return FoldEnsemble(tuple(members), k, report)


def member_overrides(member: FoldMember) -> list[str]:
    """A fold job's command-line overrides without its fold: the recipe every member shares."""
    overrides = member.run.record.overrides if member.run.record else ()
    return [override for override in overrides if Override.parse(override).key != "data.fold"]
