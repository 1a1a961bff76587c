"""What a training run is: fit, pick the best checkpoint on validation, evaluate it once,
stamp it with its operating point, and keep a run record of all of it (``run``).

``cxrnet-train`` composes the config and calls ``run``; a search calls it once per trial.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cxrnet.config import instantiate_group, save_resolved_config
from cxrnet.data import sources as data_sources
from cxrnet.data.shared_splits import SharedSplits
from cxrnet.evaluation.external import validation_at_threshold
from cxrnet.evaluation.metric_names import (
    WORST_SOURCE,
    check_source_monitor,
    is_per_source_name,
)
from cxrnet.evaluation.model_card import selection_note
from cxrnet.evaluation.report import NonFinitePredictions
from cxrnet.hardware import resolve_trainer_precision
from cxrnet.models.checkpoint import load_checkpoint, stamp_checkpoint
from cxrnet.passes.evaluation_pass import (
    check_subgroup_records,
    report_settings,
    run_evaluation_pass,
    threshold_films_for,
    threshold_rule,
    with_source_subgroup,
)
from cxrnet.passes.seen_pass import seen_in_training
from cxrnet.runs import RunRecord, RunRecorder, RunStatus, RunStopped
from cxrnet.runs.folder_lock import run_folder_lock
from cxrnet.tracking.wandb_logger import finish_wandb_run, wandb_run_defaults
from cxrnet.tracking.wandb_report import WandbReport
from cxrnet.training.callbacks import EpochSeed, LastCheckpoint, TrainingDiverged
from cxrnet.training.ddp import local_ddp_job
from cxrnet.training.preflight import check_train_config
from cxrnet.training.resume import CHECKPOINT_DIR, resolve_checkpoint
from cxrnet.training.summary import print_summary
from cxrnet.user_errors import ConfigError

log = logging.getLogger(__name__)


def resolve_data_root(cfg: DictConfig) -> str | list[str] | None:
    """The configured data root(s), None under named ``data.sources``, or the built-in synthetic
    dataset (see ``cxrnet.data.sources``)."""
    root = cfg.data.get("root")
    sources = cfg.data.get("sources")
    return data_sources.resolve_data_root(
        OmegaConf.to_container(root) if isinstance(root, ListConfig) else root,
        OmegaConf.to_container(cfg.synthetic, resolve=True),
        cfg.paths.cache_dir,
        OmegaConf.to_container(sources, resolve=True) if sources else None,
    )


def _metric_values(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(value) for result in results for key, value in result.items()}


@dataclass(frozen=True)
class Launch:
    """How the job was started, as its entry point knows it.

    ``overrides`` reproduce the job from the train config (the run record keeps them);
    ``sweep_dir`` is the multirun sweep folder of a job of a sweep (W&B groups its runs by it);
    ``rerunnable`` says the job is a ``cxrnet-train`` command line that DDP ranks can run again
    (``cxrnet.training.ddp``), which a search trial, say, is not; ``checked`` that its config
    already passed ``check_train_config`` (``cxrnet-train`` runs it before importing torch), so
    the run does not check it, open the checkpoint it resumes or probe its folders again.
    """

    overrides: tuple[str, ...] = ()
    sweep_dir: str | None = None
    rerunnable: bool = False
    checked: bool = False


def train(
    cfg: DictConfig, extra_callbacks: Sequence[Callback] = (), launch: Launch = Launch()
) -> dict[str, Any]:
    """Run one training job from a composed config: its metrics and the paths it used.

    ``extra_callbacks`` come from code rather than config, e.g. a search's pruning callback.
    """
    output_dir = Path(cfg.paths.output_dir)
    if not launch.checked:
        check_train_config(cfg)  # before any data work: a typo costs seconds, not a decode
    ckpt_path = resolve_checkpoint(cfg.get("ckpt_path"), output_dir)
    _fill_wandb_run_defaults(cfg, ckpt_path, launch)
    if rank_zero_only.rank == 0:
        save_resolved_config(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)
    root = resolve_data_root(cfg)
    job = _build_job(cfg, output_dir, root, extra_callbacks)
    for logger in job.loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    best = _fit(job, ckpt_path)
    if job.datamodule.num_classes == 2:
        metrics = _evaluate_binary(
            cfg, job.trainer, job.model, job.datamodule, best, job.loggers, job.callbacks
        )
    else:
        metrics = _evaluate_multiclass(cfg, job.trainer, job.model, job.datamodule, best, root)
    paths: dict[str, Any] = {"best_checkpoint": best, "data_root": root}
    if ckpt_path is not None:
        paths["resumed_from"] = str(ckpt_path)
    return {"metrics": metrics, **paths, "world_size": job.trainer.world_size}


@dataclass
class _Job:
    """What a training job built: its data, model, trainer, callbacks and loggers."""

    datamodule: Any
    model: Any
    trainer: L.Trainer
    callbacks: list[Callback]
    loggers: list[Any]
    last: LastCheckpoint


def _build_job(
    cfg: DictConfig, output_dir: Path, root: Any, extra_callbacks: Sequence[Callback]
) -> _Job:
    """The data module set up (rank 0 finds, checks and splits the films; other DDP ranks read
    its splits), then the model, callbacks, loggers and trainer from the config."""
    is_rank_zero = rank_zero_only.rank == 0
    # Split files and counts are written once, by rank 0.
    report_dir = str(output_dir) if is_rank_zero else None
    datamodule = instantiate(cfg.data, root=root, report_dir=report_dir, seed=cfg.seed)
    shared = SharedSplits.for_this_process(output_dir, rank_zero_only.rank)
    datamodule.shared_splits = shared
    # Until rank 0 has published its splits, the ranks srun started are waiting for them: any
    # failure before then is published too, so they stop with its reason, not at a timeout.
    try:
        datamodule.setup("fit")
        _check_subgroup_columns(cfg, datamodule)
        # At start, not after the last epoch: a threshold.films no val film meets is an error.
        threshold_films_for(cfg.get("threshold"), datamodule)
        _check_source_monitors(cfg, datamodule)
        # A findings model's outputs and loss weights; a class model's hyperparameters (and
        # checkpoints) stay as they were without them.
        findings = (
            {"findings": list(datamodule.findings), "finding_weights": datamodule.finding_weights}
            if datamodule.findings
            else {}
        )
        model = instantiate(
            cfg.model,
            class_names=list(datamodule.class_names),
            class_weights=datamodule.class_weights,
            val_sources=list(datamodule.val_sources),
            **findings,
        )
        callbacks = instantiate_group(cfg.get("callbacks"))
        last = next((c for c in callbacks if isinstance(c, LastCheckpoint)), None)
        if last is None:  # switched off in the config: SIGTERM and Ctrl-C still need it
            last = LastCheckpoint(output_dir / CHECKPOINT_DIR)
            callbacks.append(last)
        callbacks += [EpochSeed(cfg.seed), *extra_callbacks]
        loggers = instantiate_group(cfg.get("logger"))
        trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    except BaseException as error:
        if is_rank_zero:
            shared.publish_failure(error)
        raise
    if is_rank_zero and trainer.world_size > 1:
        shared.publish(datamodule.resolved_splits)
    return _Job(datamodule, model, trainer, callbacks, loggers, last)


def _fit(job: _Job, ckpt_path: Path | None) -> str:
    """Train (resuming from ``ckpt_path``); the best checkpoint's path."""
    trainer, last = job.trainer, job.last
    # Checkpoints hold plain data only (cxrnet.models.checkpoint): nothing loaded runs code.
    try:
        trainer.fit(job.model, datamodule=job.datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit as error:
        # Lightning ends a run stopped by SIGTERM with SystemExit(None) (exit code 0) and one
        # stopped by Ctrl-C with SystemExit(1): both are interruptions, not successes or failures.
        if last.reason is None:
            raise
        raise RunStopped(
            f"stopped by {last.reason} at epoch {trainer.current_epoch}, step "
            f"{trainer.global_step}; resume with ckpt_path={last.path}",
            status=RunStatus.INTERRUPTED,
        ) from error
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        # Metrics of weights nobody can load again are not a result.
        raise RunStopped(
            "no checkpoint was saved (no training epoch finished, or callbacks.model_checkpoint "
            "is off), so the run has no result to report"
        )
    return best


def _check_source_monitors(cfg: DictConfig, datamodule: Any) -> None:
    """A per-source ``monitor`` (or ``callbacks.model_checkpoint.monitor``) names a source the val
    films come from, whose val films hold every class (else its AUROC is undefined): checked
    once the films are read, before the first epoch."""
    checkpoint = (cfg.get("callbacks") or {}).get("model_checkpoint") or {}
    sources = datamodule.val_sources
    monitors = {"monitor": str(cfg.monitor)}
    if checkpoint.get("monitor") and str(checkpoint.monitor) != str(cfg.monitor):
        monitors["callbacks.model_checkpoint.monitor"] = str(checkpoint.monitor)
    for key, monitor in monitors.items():
        check_source_monitor(monitor, sources, key)
        if not is_per_source_name(monitor):
            continue
        name = monitor.split("/")[2]
        for source in sources if name == WORST_SOURCE else [name]:
            labels = {
                datamodule.label_of(r)
                for r in datamodule.split_records["val"]
                if data_sources.source_name(r) == source
            }
            if len(labels) < datamodule.num_classes:
                raise ConfigError(
                    f"{key}={monitor}: the val films of source {source!r} are all of one "
                    "class, so its metrics are undefined; keep films of every class of that "
                    "source in val, or monitor another source"
                )


def _check_subgroup_columns(cfg: DictConfig, datamodule: Any) -> None:
    """Every ``report.subgroups`` column is one some film to be evaluated carries: checked
    once the films are read, so a wrong name costs no training."""
    settings = report_settings(cfg.get("report"))
    if datamodule.num_classes != 2:
        if settings.subgroups:
            log.warning("report.subgroups is ignored: the subtype task has no pneumonia report")
        return
    evaluated = ["val", *(["test"] if cfg.get("test") else [])]
    records = datamodule.split_records
    check_subgroup_records(settings, (r for s in evaluated for r in records.get(s, [])))


def _evaluate_binary(
    cfg: DictConfig,
    trainer: L.Trainer,
    model: Any,
    datamodule: Any,
    ckpt: str,
    loggers: Sequence[Any],
    callbacks: Sequence[Callback],
) -> dict[str, float]:
    """One evaluation pass over the best checkpoint on rank 0: each split predicted once, the
    threshold chosen on validation and stored in the checkpoint with the preprocessing."""
    if not trainer.is_global_zero:
        return {}
    model.load_state_dict(load_checkpoint(ckpt)["state_dict"])
    splits = ["val"]
    if cfg.get("test") and datamodule.has_test:
        splits.append("test")
    elif cfg.get("test"):
        log.warning("no test split under %s: skipped testing", datamodule.root)
    wandb_report = next((c for c in callbacks if isinstance(c, WandbReport)), None)
    films = threshold_films_for(cfg.get("threshold"), datamodule)
    val_records = datamodule.split_records["val"]
    criterion = threshold_rule(cfg.get("threshold")).criterion
    try:
        report = run_evaluation_pass(
            model,
            datamodule,
            splits,
            Path(cfg.paths.output_dir),
            rule=threshold_rule(cfg.get("threshold")),
            settings=with_source_subgroup(
                report_settings(cfg.get("report")),
                (r for split in splits for r in datamodule.split_records.get(split, [])),
            ),
            loggers=loggers,
            wandb_report=wandb_report,
            checkpoint=ckpt,
            threshold_films=films,
            notes=[
                selection_note(
                    datamodule.counts(),
                    monitor=cfg.monitor,
                    split=datamodule.split_config.split,
                    val_fraction=datamodule.split_config.val_fraction,
                    criterion=f"threshold.criterion={criterion}",
                    keep_in_val=datamodule.split_config.keep_in_val,
                    threshold_films=films.describe(
                        val_records, [datamodule.label_of(r) for r in val_records]
                    ),
                )
            ],
        )
    except NonFinitePredictions as error:
        raise TrainingDiverged(
            f"{cfg.monitor} of the best checkpoint {ckpt} is nan: {error}; lower model.optimizer.lr"
        ) from error
    threshold_records = [r for r in val_records if films.matches(r)] if films.on else val_records
    stamp_checkpoint(
        ckpt,
        report.operating_point,
        datamodule.decode_params,
        validation_at_threshold(report),
        report.finding_thresholds,
        seen_in_training(datamodule, threshold_records),
    )
    metrics = dict(report.metrics)
    best = trainer.checkpoint_callback.best_model_score if trainer.checkpoint_callback else None
    if best is not None:
        metrics[f"{cfg.monitor}_best"] = float(best)
    return metrics


def _evaluate_multiclass(
    cfg: DictConfig,
    trainer: L.Trainer,
    model: Any,
    datamodule: Any,
    ckpt: str,
    root: Any,
) -> dict[str, float]:
    """The subtype task has no threshold: the trainer's own validate and test passes."""
    metrics = _metric_values(
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    )
    if not math.isfinite(metrics.get(cfg.monitor, math.nan)):
        raise TrainingDiverged(
            f"{cfg.monitor} of the best checkpoint {ckpt} is {metrics.get(cfg.monitor)}: its "
            "predictions are not finite (training diverged); lower model.optimizer.lr"
        )
    if cfg.get("test") and datamodule.has_test:
        metrics |= _metric_values(
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        )
    elif cfg.get("test"):
        log.warning("no test split under %s: skipped testing", root)
    return metrics


def run(
    cfg: DictConfig,
    extra_callbacks: Sequence[Callback] = (),
    *,
    launch: Launch = Launch(),
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """``train`` inside a run record: written as ``running`` first, then with how it ended.

    ``launch.overrides`` are recorded as the ones that reproduce the run (a search passes each
    trial's). W&B is closed whatever happens, so the next multirun job starts its own run.
    """
    output_dir = Path(cfg.paths.output_dir)
    # Before anything saves or logs the config: it and the record carry the resolved value.
    extra = {**(extra or {}), "precision": resolve_trainer_precision(cfg)}
    if os.environ.get("SLURM_JOB_ID"):
        # Which Slurm job ran it, and how often Slurm restarted (requeued) that job.
        slurm = {
            "slurm_job_id": os.environ["SLURM_JOB_ID"],
            "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0)),
        }
        extra = {**(extra or {}), **slurm}
    # Under DDP every rank runs this, in the same folder; rank 0 holds it and writes.
    rank_zero = rank_zero_only.rank == 0
    recorder = RunRecorder(
        output_dir,
        "cxrnet-train",
        list(launch.overrides),
        monitor=cfg.get("monitor"),
        write=rank_zero,
        extra=extra,
    )
    folder_lock = run_folder_lock(output_dir) if rank_zero else contextlib.nullcontext()
    try:
        ddp_overrides = list(launch.overrides) if launch.rerunnable else None
        # The lock first: a process refused it never writes the holder's record.
        with folder_lock, recorder, local_ddp_job(output_dir, ddp_overrides):
            result = train(cfg, extra_callbacks, launch)
            recorder.update(extra={**recorder.record.extra, "world_size": result.pop("world_size")})
            recorder.complete(result.pop("metrics"), paths=result)
    except BaseException:
        finish_wandb_run(exit_code=1)  # marks the W&B run failed; the finally finds none open
        raise
    finally:
        finish_wandb_run()
    if recorder.write:
        print_summary(recorder.record)
    return recorder.record


def _fill_wandb_run_defaults(cfg: DictConfig, ckpt_path: Path | None, launch: Launch) -> None:
    """Unset W&B group/name/id: a multirun job is grouped by its sweep folder and named by its
    overrides; a resumed run continues the W&B run stored in its checkpoint."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return
    defaults = wandb_run_defaults(
        sweep_dir=launch.sweep_dir,
        overrides=launch.overrides if launch.sweep_dir else (),
        ckpt_path=None if ckpt_path is None else str(ckpt_path),
    )
    with open_dict(wandb_cfg):
        for key, value in defaults.items():
            if wandb_cfg.get(key) is None:
                wandb_cfg[key] = value
