"""Configuration checks that run before any data is read, so a typo costs seconds, not a decode.

Each check raises ``ConfigError`` (or ``CheckpointError``) naming the key, the value and the fix;
the entry points print it as one line (``cxrnet.cli.exit_codes``). The entry points run these
before importing torch, Lightning or W&B, so nothing here imports them: network names come from
the registry's catalogue, metric names from ``evaluation.metric_names``. Only a run that resumes
from a checkpoint imports torch here, to open it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from cxrnet.data.augment_settings import check_augment
from cxrnet.data.records import CLASS_NAMES, SUBTYPE_NAMES
from cxrnet.evaluation.metric_names import (
    epoch_metric_names,
    finding_metric_names,
    is_finding_name,
    is_per_source_name,
    monitor_mode_for,
)
from cxrnet.evaluation.subgroup_columns import DEFAULT_AGE_BANDS, check_subgroup_settings
from cxrnet.evaluation.subgroups import DEFAULT_SHORTCUT_FLAG
from cxrnet.evaluation.thresholds import ThresholdRule
from cxrnet.models.registry import check_model_name
from cxrnet.plain_data import plain_data
from cxrnet.publish import unwritable_reason
from cxrnet.runs import RECORD_NAME, RunRecorder
from cxrnet.setting_types import check_setting_types
from cxrnet.tracking.wandb_folders import check_wandb_folders
from cxrnet.training.resume import resolve_checkpoint
from cxrnet.user_errors import ConfigError


def check_writable(folder: Path | str, key: str) -> None:
    """``folder`` exists or can be made, and a file can be written in it."""
    folder = Path(folder).expanduser()
    reason = unwritable_reason(folder)
    if reason is not None:
        raise ConfigError(
            f"{key}={folder} is not a writable folder ({reason}); set {key} to a "
            "folder you can write (or CXRNET_CACHE_DIR / paths.cache_dir for every cache)"
        )


def check_network(cfg: DictConfig) -> None:
    """``model.net.name`` resolves: a registered name, ``timm/<name>``, an import path or an
    entry point (the registry's error names every form)."""
    name = cfg.model.net.get("name")
    try:
        check_model_name(str(name))
    except ValueError as error:
        raise ConfigError(str(error)) from None


def check_weights(cfg: DictConfig) -> None:
    """``model.net.weights``, when required (``experiment=finetune``) or set, names a file."""
    net = cfg.model.net
    if OmegaConf.is_missing(net, "weights") or (cfg.get("finetune") and not net.get("weights")):
        raise ConfigError(
            "model.net.weights is required here (experiment=finetune): set "
            "model.net.weights=<the cxrnet checkpoint or state dict to start from>"
        )
    weights = net.get("weights")
    if weights and not Path(str(weights)).expanduser().is_file():
        raise ConfigError(
            f"model.net.weights={weights}: no such file; pass the path of a cxrnet checkpoint "
            "(a run's checkpoints/epoch_*.ckpt) or of a saved state dict"
        )


def resolve_monitor(cfg: DictConfig) -> None:
    """``monitor`` is a validation metric the module logs; ``monitor_mode`` agrees with it.

    A per-source name (``val/auroc/<source>``, ``val/auroc/worst``) passes here: the sources
    are known once the films are read, and ``cxrnet.training.run`` checks it then, before the
    first epoch (``metric_names.check_source_monitor``).
    """
    task = cfg.data.get("task")
    class_names = SUBTYPE_NAMES if task == "subtype" else CLASS_NAMES
    choices = epoch_metric_names("val", class_names)
    if task == "findings":
        # Which findings are learnt is known once the films are read (data.findings=null):
        # the module checks a per-finding name then, before the first epoch.
        choices = finding_metric_names("val", ())
        if is_finding_name(str(cfg.monitor)):
            choices.append(str(cfg.monitor))
    if cfg.monitor not in choices and not is_per_source_name(str(cfg.monitor)):
        raise ConfigError(
            f"monitor={cfg.monitor!r} is not a validation metric the model logs; choose one of "
            f"{choices}, or val/<metric>/<source> (val/auroc/worst) when the films name their "
            "source"
        )
    monitor_mode_for(str(cfg.monitor), cfg.get("monitor_mode"))


def check_epochs(cfg: DictConfig) -> None:
    max_epochs = cfg.trainer.get("max_epochs")
    if max_epochs is not None and max_epochs != -1 and max_epochs < 1:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs} trains nothing, so there is no checkpoint to "
            "report; set trainer.max_epochs to 1 or more"
        )


def check_report_config(cfg: DictConfig) -> None:
    """``report.subgroups``, ``report.age_bands`` and ``report.shortcut_flag`` are usable; that
    the films carry the columns is checked once the data is read (``check_subgroup_data``)."""
    report = cfg.get("report") or {}
    check_subgroup_settings(
        report.get("subgroups", ()),
        report.get("age_bands", DEFAULT_AGE_BANDS),
        report.get("shortcut_flag", DEFAULT_SHORTCUT_FLAG),
    )


def check_train_config(cfg: DictConfig) -> None:
    """Everything ``cxrnet-train`` can check without data: network, monitor, epochs, the
    report's subgroup settings, the threshold rule, ``data.augment``'s keys and ranges, the
    checkpoint to resume from, the image cache folder and W&B's own folders; and a warning when
    the resume is not exact."""
    check_network(cfg)
    check_weights(cfg)
    resolve_monitor(cfg)
    check_epochs(cfg)
    check_report_config(cfg)
    ThresholdRule.from_mapping(plain_data(cfg.get("threshold")))  # its criterion and values
    check_augment(plain_data(OmegaConf.select(cfg, "data.augment") or {}))
    # ckpt_path=last/auto, or a requeued job's own folder: the checkpoint a resume would load.
    ckpt_path = resolve_checkpoint(cfg.get("ckpt_path"), cfg.paths.output_dir)
    if ckpt_path is not None:
        from cxrnet.models.checkpoint import load_checkpoint  # torch: only to resume

        warn_inexact_resume(cfg, load_checkpoint(ckpt_path, mmap=True), ckpt_path)
    if cfg.data.get("cache_dir"):
        check_writable(cfg.data.cache_dir, "data.cache_dir")
    wandb_cfg = (cfg.get("logger") or {}).get("wandb")
    if wandb_cfg and wandb_cfg.get("mode") != "disabled":
        check_wandb_folders()


def warn_inexact_resume(cfg: DictConfig, checkpoint: dict, ckpt_path: Path) -> None:
    """One line when the resume's ``data.batch_size`` differs from the run it continues: the
    batches, the steps per epoch and the random draws change, so it is no longer exact."""
    stored = (checkpoint.get("datamodule_hyper_parameters") or {}).get("batch_size")
    asked = cfg.data.get("batch_size")
    if stored is None or asked is None or int(stored) == int(asked) or rank_from_env() != 0:
        return
    print(
        f"warning: data.batch_size={asked} differs from the {stored} that {ckpt_path} was "
        f"trained with: this resume is not an exact continuation (set data.batch_size={stored} "
        "for one)",
        file=sys.stderr,
    )


# Where Lightning reads a process's rank from, in its order (lightning.fabric's _get_rank).
_RANK_ENV = ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def rank_from_env() -> int:
    return next((int(os.environ[key]) for key in _RANK_ENV if key in os.environ), 0)


def preflight_train(
    cfg: DictConfig, overrides: Sequence[str] = (), reference: Mapping[str, Any] | None = None
) -> None:
    """``check_train_config`` as a ``cxrnet-train`` job's first step, before torch is imported,
    after every value's kind and range (``check_setting_types`` against ``reference``, what
    conf/ gives each key).

    A job that fails it leaves a ``failed`` run record with its error (rank 0 writes it), as one
    that fails later in ``cxrnet.training.run.run`` does, so tools list it with the reason. In a
    folder that already holds a record (a resume of that run, a requeued job) the job never
    started, so the record of the run it tried to continue stays as it was.
    """
    try:
        if reference is not None:
            check_setting_types(OmegaConf.to_container(cfg, resolve=False), reference)
        check_train_config(cfg)
    except Exception as error:
        output_dir = Path(cfg.paths.output_dir)
        recorder = RunRecorder(
            output_dir,
            "cxrnet-train",
            overrides,
            monitor=cfg.get("monitor"),
            write=rank_from_env() == 0 and not (output_dir / RECORD_NAME).exists(),
        )
        recorder.fail(error)
        raise
