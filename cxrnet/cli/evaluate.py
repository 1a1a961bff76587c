"""``cxrnet-eval ckpt_path=...``: recompute a checkpoint's metrics on its validation/test data."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from cxrnet.cli.errors import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    job_overrides,
    register_resolvers,
    save_resolved_config,
)
from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.evaluation.operating_point import operating_point
from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.module import ClassifierModule
from cxrnet.runs import RunRecorder

log = logging.getLogger(__name__)


def datamodule_for(cfg: DictConfig, checkpoint: dict[str, Any]) -> ChestXRayDataModule:
    """The data the checkpoint was trained with, unless the config names other data."""
    if cfg.get("data"):
        return instantiate(cfg.data)
    hparams = checkpoint.get("datamodule_hyper_parameters")
    if not hparams:
        raise ValueError(
            f"checkpoint {cfg.ckpt_path} does not record its data settings; pass data=chest_xray "
            "data.root=<folder>"
        )
    return ChestXRayDataModule(**hparams)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The checkpoint's metrics on each of ``cfg.stages``, plus the validation-chosen threshold."""
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    checkpoint = load_checkpoint(ckpt_path)
    model = ClassifierModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = datamodule_for(cfg, checkpoint)
    datamodule.setup("test")
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    metrics: dict[str, float] = {}
    for stage in cfg.stages:
        if stage == "val":
            results = trainer.validate(model, datamodule=datamodule)
        elif stage == "test":
            if not datamodule.has_test:
                log.warning("no test split in %s: skipped", datamodule.root)
                continue
            results = trainer.test(model, datamodule=datamodule)
        else:
            raise ValueError(f"stages may hold 'val' and 'test', got {stage!r}")
        metrics |= {key: float(value) for result in results for key, value in result.items()}
    if model.num_classes == 2 and cfg.get("threshold"):
        # As in training: the threshold comes from the validation split, whatever is scored.
        metrics |= operating_point(
            model,
            datamodule,
            Path(cfg.paths.output_dir),
            criterion=cfg.threshold.criterion,
            min_sensitivity=cfg.threshold.min_sensitivity,
            include_test="test" in cfg.stages,
        )
    return metrics


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="eval")
@brief_errors
def _hydra_main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    ckpt_path = str(Path(cfg.ckpt_path).expanduser())
    with RunRecorder(output_dir, "cxrnet-eval", job_overrides()) as recorder:
        recorder.update(paths={"ckpt_path": ckpt_path})
        recorder.complete(evaluate(cfg))
    for key, value in sorted(recorder.record.metrics.items()):
        print(f"{key}: {value:.4f}")
    print(f"run folder: {output_dir}")


def main() -> None:
    register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    main()
