"""``cxrnet-eval ckpt_path=...``: the evaluation pass and report for a checkpoint, on its own data
or on any folder in the dataset layout (``data=chest_xray data.root=...``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import CONFIG_PATH, HYDRA_VERSION, allowed_network, job_overrides
from cxrnet.config import register_resolvers, save_resolved_config
from cxrnet.runs import Override, RunRecorder
from cxrnet.user_errors import ConfigError

if TYPE_CHECKING:
    from cxrnet.data.datamodule import ChestXRayDataModule

log = logging.getLogger(__name__)


def _explicit_data_keys() -> set[str]:
    """``data.<key>`` settings given on the command line, which win over the checkpoint's."""
    if not HydraConfig.initialized():
        return set()
    keys = set()
    for line in HydraConfig.get().overrides.task:
        key = Override.parse(line).key
        if key.startswith("data."):
            keys.add(key.removeprefix("data."))
    return keys


def datamodule_for(cfg: DictConfig, checkpoint: dict[str, Any]) -> ChestXRayDataModule:
    """The data the checkpoint was trained with, unless the config names other data.

    Other data is decoded with the checkpoint's preprocessing unless the command line sets a
    preprocessing key; a setting the network cannot take is an error before any decoding.
    """
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.data.sources import resolve_data_root
    from cxrnet.models.checkpoint import PREPROCESSING_KEYS, preprocessing_of

    stored = preprocessing_of(checkpoint)
    if not cfg.get("data"):
        hparams = checkpoint.get("datamodule_hyper_parameters")
        if not hparams:
            raise ConfigError(
                f"checkpoint {cfg.ckpt_path} does not record its data settings; pass "
                "data=chest_xray data.root=<folder>"
            )
        return ChestXRayDataModule(**hparams)
    settings = OmegaConf.to_container(cfg.data, resolve=True)
    settings.pop("_target_", None)
    explicit = _explicit_data_keys()
    for key in PREPROCESSING_KEYS:
        if key not in explicit:
            settings[key] = getattr(stored, key)
        elif settings[key] != getattr(stored, key):
            log.warning("data.%s=%s differs from the checkpoint's %s", key, settings[key], stored)
    net = checkpoint["hyper_parameters"]["net"]
    if "image_size" in net and settings["image_size"] != net["image_size"]:
        raise ConfigError(
            f"checkpoint {cfg.ckpt_path}: its network ({net['name']}) was built for "
            f"image_size {net['image_size']}, so data.image_size={settings['image_size']} cannot "
            "work; drop data.image_size to use the checkpoint's preprocessing"
        )
    settings["root"] = resolve_data_root(
        settings.get("root"),
        OmegaConf.to_container(cfg.synthetic, resolve=True) if cfg.get("synthetic") else None,
        cfg.paths.cache_dir,
    )
    return ChestXRayDataModule(**settings)


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """The checkpoint's report on each of ``cfg.stages``.

    Binary checkpoints use their stored operating point (``threshold.rechoose=true`` chooses it
    again on this data's validation split); the subtype task uses the trainer's own passes.
    """
    # Here, not at the top: `cxrnet-eval --help` and usage errors need no torch or Lightning.
    from hydra.utils import instantiate

    from cxrnet.evaluation.evaluation_pass import (
        report_settings,
        run_evaluation_pass,
        threshold_rule,
    )
    from cxrnet.models.checkpoint import check_network_of, load_checkpoint, operating_point_of
    from cxrnet.models.ensemble_manifest import is_manifest
    from cxrnet.models.module import ClassifierModule
    from cxrnet.training.hardware import resolve_trainer_precision

    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if is_manifest(ckpt_path):
        # Its members' data modules hold their own folds: no split here is unseen by all of them.
        raise ConfigError(
            f"{ckpt_path} is a fold ensemble: its report (held-out and cross-validated) is in "
            "report.md beside it, written by cxrnet-ensemble; score new films with "
            "cxrnet-predict ckpt_path=<ensemble.json>"
        )
    checkpoint = load_checkpoint(ckpt_path)
    check_network_of(checkpoint, ckpt_path, allowed_network(cfg))
    model = ClassifierModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    datamodule = datamodule_for(cfg, checkpoint)
    datamodule.setup("test")
    for stage in cfg.stages:
        if stage not in ("val", "test"):
            raise ConfigError(f"stages may hold 'val' and 'test', got {stage!r}")
    tta = bool(cfg.get("tta"))
    if tta and model.num_classes != 2:
        raise ConfigError("tta=true needs a binary (normal/pneumonia) checkpoint")
    if model.num_classes == 2:
        stored = operating_point_of(checkpoint)
        threshold_cfg = cfg.get("threshold") or {}
        rechoose = bool(threshold_cfg.get("rechoose")) or stored is None
        if stored is None:
            log.warning("checkpoint %s stores no operating point: choosing one on val", ckpt_path)
        report = run_evaluation_pass(
            model,
            datamodule,
            list(cfg.stages),
            Path(cfg.paths.output_dir),
            rule=threshold_rule(threshold_cfg),
            operating_point=None if rechoose else stored,
            settings=report_settings(cfg.get("report")),
            checkpoint=str(ckpt_path),
            tta=tta,
        )
        return dict(report.metrics)
    resolve_trainer_precision(cfg)
    trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
    metrics: dict[str, float] = {}
    for stage in cfg.stages:
        if stage == "val":
            results = trainer.validate(model, datamodule=datamodule)
        elif not datamodule.has_test:
            log.warning("no test split in %s: skipped", datamodule.root)
            continue
        else:
            results = trainer.test(model, datamodule=datamodule)
        metrics |= {key: float(value) for result in results for key, value in result.items()}
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
    shown = {k: v for k, v in recorder.record.metrics.items() if "_ci_" not in k}
    for key, value in sorted(shown.items()):
        print(f"{key}: {value:.4f}")
    if (output_dir / "report.md").is_file():
        print(f"report: {output_dir / 'report.md'}")
    print(f"run folder: {output_dir}")


def main() -> None:
    register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    main()
