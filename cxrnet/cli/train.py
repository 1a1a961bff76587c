"""``cxrnet-train``: fit, pick the best checkpoint on validation, test it, write metrics.json."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from cxrnet.callbacks import TrainingDiverged
from cxrnet.cli.errors import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    instantiate_group,
    job_overrides,
    register_resolvers,
    save_resolved_config,
    warn_deprecated_choices,
)
from cxrnet.cli.preflight import check_train_config
from cxrnet.data.synthetic import SyntheticSpec, ensure_synthetic
from cxrnet.evaluation.operating_point import operating_point
from cxrnet.runs import RunRecord, RunRecorder, RunStopped
from cxrnet.tracking import finish_wandb_run, wandb_run_defaults

log = logging.getLogger(__name__)


def resolve_data_root(cfg: DictConfig) -> str | list[str]:
    """The configured data root(s) as given (the data module reads folders, manifests and
    lists of either), or the built-in synthetic dataset, generated once."""
    root = cfg.data.get("root")
    if root:
        return OmegaConf.to_container(root) if isinstance(root, ListConfig) else str(root)
    spec = SyntheticSpec(**OmegaConf.to_container(cfg.synthetic, resolve=True))
    generated = ensure_synthetic(Path(cfg.paths.cache_dir) / "synthetic", spec)
    log.info("data.root not set: training on the built-in synthetic dataset at %s", generated)
    return str(generated)


def _metric_values(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(value) for result in results for key, value in result.items()}


def train(cfg: DictConfig, extra_callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run one training job from a composed config: its metrics and the paths it used.

    ``extra_callbacks`` come from code rather than config, e.g. a search's pruning callback.
    """
    output_dir = Path(cfg.paths.output_dir)
    if HydraConfig.initialized():
        warn_deprecated_choices(HydraConfig.get().runtime.choices)
    check_train_config(cfg)  # before any data work: a typo costs seconds, not a decode
    _fill_wandb_run_defaults(cfg)
    save_resolved_config(cfg, output_dir)
    L.seed_everything(cfg.seed, workers=True)

    root = resolve_data_root(cfg)
    datamodule = instantiate(cfg.data, root=root, report_dir=str(output_dir))
    datamodule.setup("fit")
    model = instantiate(
        cfg.model,
        class_names=list(datamodule.class_names),
        class_weights=datamodule.class_weights,
    )
    callbacks = [*instantiate_group(cfg.get("callbacks")), *extra_callbacks]
    loggers = instantiate_group(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    # Checkpoints hold plain data only (cxrnet.models.checkpoint): nothing loaded runs code.
    trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"), weights_only=True)
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not best:
        # Metrics of weights nobody can load again are not a result.
        raise RunStopped(
            "no checkpoint was saved (no training epoch finished, or callbacks.model_checkpoint "
            "is off), so the run has no result to report"
        )
    ckpt = best
    metrics = _metric_values(
        trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    )
    if not math.isfinite(metrics.get(cfg.monitor, math.nan)):
        raise TrainingDiverged(
            f"{cfg.monitor} of the best checkpoint {best} is {metrics.get(cfg.monitor)}: its "
            "predictions are not finite (training diverged); lower model.optimizer.lr"
        )
    if cfg.get("test") and datamodule.has_test:
        metrics |= _metric_values(
            trainer.test(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        )
    elif cfg.get("test"):
        log.warning("no test split under %s: skipped testing", root)
    if datamodule.num_classes == 2 and cfg.get("threshold") and trainer.is_global_zero:
        metrics |= operating_point(
            model,
            datamodule,
            output_dir,
            criterion=cfg.threshold.criterion,
            min_sensitivity=cfg.threshold.min_sensitivity,
            include_test=bool(cfg.get("test")),
        )
    return {"metrics": metrics, "best_checkpoint": best, "data_root": root}


def run(
    cfg: DictConfig,
    extra_callbacks: Sequence[Callback] = (),
    *,
    overrides: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> RunRecord:
    """``train`` inside a run record: written as ``running`` first, then with how it ended.

    ``overrides`` default to the Hydra job's own; a search passes each trial's. W&B is closed
    whatever happens, so the next multirun job starts its own run.
    """
    output_dir = Path(cfg.paths.output_dir)
    recorder = RunRecorder(
        output_dir,
        "cxrnet-train",
        job_overrides() if overrides is None else overrides,
        monitor=cfg.get("monitor"),
        # Under DDP every rank runs this; one writes.
        write=rank_zero_only.rank == 0,
        extra=extra,
    )
    try:
        with recorder:
            result = train(cfg, extra_callbacks)
            recorder.complete(result.pop("metrics"), paths=result)
    except BaseException:
        finish_wandb_run(exit_code=1)  # marks the W&B run failed; the finally finds none open
        raise
    finally:
        finish_wandb_run()
    if recorder.write:
        _print_summary(recorder.record)
    return recorder.record


def _fill_wandb_run_defaults(cfg: DictConfig) -> None:
    """Unset W&B group/name/id: a multirun job is grouped by its sweep folder and named by its
    overrides; a run resumed from ``ckpt_path`` continues the W&B run stored in the checkpoint."""
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if not wandb_cfg:
        return
    hydra_cfg = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN
    defaults = wandb_run_defaults(
        sweep_dir=hydra_cfg.sweep.dir if multirun else None,
        overrides=list(hydra_cfg.overrides.task) if multirun else (),
        ckpt_path=cfg.get("ckpt_path"),
    )
    with open_dict(wandb_cfg):
        for key, value in defaults.items():
            if wandb_cfg.get(key) is None:
                wandb_cfg[key] = value


def _print_summary(record: RunRecord) -> None:
    """A metric-by-split table of the best checkpoint, then where everything went."""
    metrics = record.metrics
    splits = [s for s in ("val", "test") if any(k.startswith(f"{s}/") for k in metrics)]
    names = sorted({key.split("/", 1)[1] for key in metrics if key.split("/", 1)[0] in splits})
    if not names:
        print(f"\nrun folder: {record.run_dir}")
        return
    width = max(len(name) for name in names)
    print(f"\n{'metric':<{width}}  " + "  ".join(f"{split:>8}" for split in splits))
    for name in names:
        cells = [metrics.get(f"{split}/{name}") for split in splits]
        row = "  ".join("       -" if c is None else f"{c:8.4f}" for c in cells)
        print(f"{name:<{width}}  {row}")
    print(f"\nbest checkpoint: {record.paths.get('best_checkpoint')}")
    print(f"run folder: {record.run_dir}")


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="train")
@brief_errors
def _hydra_main(cfg: DictConfig) -> float | None:
    record = run(cfg)
    # Sweepers minimise or maximise what the app returns: the monitored validation metric.
    value = record.metrics.get(cfg.monitor)
    return None if value is None else float(value)


def main() -> None:
    register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    main()
