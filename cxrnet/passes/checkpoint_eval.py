"""A checkpoint's evaluation pass and report on data of the user's choice: its own (what it was
trained on), or any folder or manifest in the dataset layout; what ``cxrnet-eval`` runs."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from cxrnet.user_errors import ConfigError

if TYPE_CHECKING:
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.data.seen_films import SeenCheck
    from cxrnet.evaluation.thresholds import OperatingPoint
    from cxrnet.models.module import ClassifierModule

log = logging.getLogger(__name__)
# data.seen_films (conf/eval.yaml): what is done with films the model saw; read here, never
# passed to the data module.
SEEN_KEY = "seen_films"


def _check_image_size(cfg: DictConfig, checkpoint: dict[str, Any], image_size: int) -> None:
    net = checkpoint["hyper_parameters"]["net"]
    if "image_size" in net and image_size != net["image_size"]:
        raise ConfigError(
            f"checkpoint {cfg.ckpt_path}: its network ({net['name']}) was built for "
            f"image_size {net['image_size']}, so data.image_size={image_size} cannot "
            "work; drop data.image_size to use the checkpoint's preprocessing"
        )


def _checkpoint_data(
    cfg: DictConfig, checkpoint: dict[str, Any], explicit: AbstractSet[str]
) -> tuple[ChestXRayDataModule, str]:
    """The checkpoint's own data settings with the command line's ``data.*`` keys on top.

    The image cache is this machine's (``paths.cache_dir``, ``CXRNET_CACHE_DIR``), never the
    folder the training machine used, which may be gone, read-only or someone else's.
    """
    from cxrnet.data.datamodule import ChestXRayDataModule

    hparams = checkpoint.get("datamodule_hyper_parameters")
    if not hparams:
        raise ConfigError(
            f"checkpoint {cfg.ckpt_path} does not record its data settings; pass "
            "data=chest_xray data.root=<folder>"
        )
    settings = dict(hparams)
    if settings.get("cache_dir"):
        # Where conf/data/chest_xray.yaml puts it: ${paths.cache_dir}/images.
        settings["cache_dir"] = str(Path(cfg.paths.cache_dir).expanduser() / "images")
    given = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else {}
    for key in sorted({key.split(".")[0] for key in explicit}):
        settings[key] = given[key]
    if "image_size" in explicit:
        _check_image_size(cfg, checkpoint, settings["image_size"])
    settings.pop(SEEN_KEY, None)  # the evaluation's, not the data module's
    datamodule = ChestXRayDataModule(**settings)
    sources = ", ".join(str(source) for source in datamodule.sources)
    return datamodule, f"the checkpoint's own data ({sources})"


def datamodule_for(
    cfg: DictConfig,
    checkpoint: dict[str, Any],
    explicit: AbstractSet[str] = frozenset(),
    data_group_chosen: bool = False,
) -> tuple[ChestXRayDataModule, str]:
    """The data to score and a line saying which: the data the checkpoint was trained with,
    unless the command line names other data (``data.root=...``, or ``data=<group>``, whose
    ``root: null`` is the built-in synthetic set). Other ``data.*`` keys alone change settings
    of the checkpoint's own data.

    Other data is decoded with the checkpoint's preprocessing unless the command line sets a
    preprocessing key; a setting the network cannot take is an error before any decoding.
    ``explicit`` are the ``data.<key>`` settings the user gave (they win over the checkpoint's);
    ``data_group_chosen`` says the user chose a data config group.
    """
    from cxrnet.data.datamodule import ChestXRayDataModule
    from cxrnet.data.sources import resolve_data_root
    from cxrnet.models.checkpoint import PREPROCESSING_KEYS, preprocessing_of

    if not cfg.get("data") or ("root" not in explicit and not data_group_chosen):
        return _checkpoint_data(cfg, checkpoint, explicit)
    stored = preprocessing_of(checkpoint)
    settings = OmegaConf.to_container(cfg.data, resolve=True)
    settings.pop("_target_", None)
    settings.pop(SEEN_KEY, None)
    if not data_group_chosen:
        # data.root alone (conf/eval.yaml): the data module's defaults, this machine's cache.
        settings.setdefault("cache_dir", str(Path(cfg.paths.cache_dir).expanduser() / "images"))
    for key in PREPROCESSING_KEYS:
        if key not in explicit:
            settings[key] = getattr(stored, key)
        elif settings[key] != getattr(stored, key):
            log.warning("data.%s=%s differs from the checkpoint's %s", key, settings[key], stored)
    _check_image_size(cfg, checkpoint, settings["image_size"])
    if findings := (checkpoint.get("hyper_parameters") or {}).get("findings"):
        # A findings model scores its own findings on any data: OTHER_ABNORMAL films are read
        # as films, each film's findings as targets.
        settings["task"], settings["findings"] = "findings", list(findings)
    # Films the user's data names no split for are an external site's test set, never training
    # films to re-split: a folder of NORMAL/ and PNEUMONIA/, a manifest without a split column.
    settings["unsplit"] = "test"
    settings["root"] = resolve_data_root(
        settings.get("root"),
        OmegaConf.to_container(cfg.synthetic, resolve=True) if cfg.get("synthetic") else None,
        cfg.paths.cache_dir,
        settings.get("sources"),
    )
    datamodule = ChestXRayDataModule(**settings)
    sources = ", ".join(str(source) for source in datamodule.sources)
    if not cfg.data.get("root"):
        return datamodule, f"the built-in synthetic dataset, as data.root is not set ({sources})"
    return datamodule, f"data.root from the command line ({sources})"


def check_stages(stages: Sequence[str]) -> None:
    """``stages`` names the splits to score: 'val', 'test' or both, at least one (an empty list
    would write an empty report and look like a success)."""
    if not stages:
        raise ConfigError("stages=[] scores nothing; set stages=[test], [val] or [val,test]")
    for stage in stages:
        if stage not in ("val", "test"):
            raise ConfigError(f"stages may hold 'val' and 'test', got {stage!r}")


def _check_without_val(
    cfg: DictConfig, ckpt_path: Path, datamodule: ChestXRayDataModule, no_stored_threshold: bool
) -> None:
    """A test set scored as given (an external site) has no val split: asking for val, or for
    a threshold chosen on it, is an error rather than a report without what was asked for."""
    where = f"{datamodule.root} has no val split (it is scored as a test set, as given)"
    if "val" in cfg.stages:
        raise ConfigError(f"{where}, so stages={list(cfg.stages)} cannot be met; use stages=[test]")
    if bool((cfg.get("threshold") or {}).get("rechoose")):
        raise ConfigError(
            f"{where} to choose a threshold on: use threshold.rechoose=false (the checkpoint's "
            "stored operating point), or add a val folder or split=val manifest rows"
        )
    if no_stored_threshold:
        raise ConfigError(
            f"{where} and checkpoint {ckpt_path} stores no operating point (last.ckpt?): "
            "evaluate the run's best checkpoint, or add a val folder or split=val rows"
        )


def evaluate_checkpoint(
    cfg: DictConfig, explicit: AbstractSet[str] = frozenset(), data_group_chosen: bool = False
) -> dict[str, float]:
    """The report of the checkpoint ``cfg.ckpt_path`` on each of ``cfg.stages``, on the data
    ``datamodule_for`` chooses (``explicit`` and ``data_group_chosen`` as there).

    Binary checkpoints use their stored operating point (``threshold.rechoose=true`` chooses it
    again on this data's validation split); the subtype task uses the trainer's own passes.
    """
    from cxrnet.models.checkpoint import (
        check_network_of,
        load_checkpoint,
        operating_point_of,
        seen_films_of,
    )
    from cxrnet.models.ensemble_manifest import is_manifest
    from cxrnet.models.module import ClassifierModule
    from cxrnet.passes.seen_pass import check_seen_films

    check_stages(cfg.stages)
    ckpt_path = Path(cfg.ckpt_path).expanduser()
    if is_manifest(ckpt_path):
        if "root" in explicit:
            return _evaluate_ensemble_on_site(cfg, ckpt_path, explicit, data_group_chosen)
        # Its members' data modules hold their own folds: no split here is unseen by all of them.
        raise ConfigError(
            f"{ckpt_path} is a fold ensemble: its report (held-out and cross-validated) is in "
            "report.md beside it, written by cxrnet-ensemble; score new films with "
            "cxrnet-predict ckpt_path=<ensemble.json>, another site's labelled films with "
            "data.root=<folder or manifest>"
        )
    checkpoint = load_checkpoint(ckpt_path)
    # An import path stored in the checkpoint runs only if the user named it on this command.
    allowed = OmegaConf.select(cfg, "model.net.name")
    check_network_of(checkpoint, ckpt_path, None if allowed is None else str(allowed))
    model = ClassifierModule(**checkpoint["hyper_parameters"])
    model.load_state_dict(checkpoint["state_dict"])
    datamodule, data_scored = datamodule_for(cfg, checkpoint, explicit, data_group_chosen)
    log.info("scoring %s", data_scored)
    if model.findings:
        datamodule.use_findings(model.findings)
    datamodule.setup("test")
    seen = check_seen_films(
        datamodule, seen_films_of(checkpoint), _seen_policy(cfg), Path(cfg.paths.output_dir)
    )
    stored = operating_point_of(checkpoint) if model.num_classes == 2 else None
    if "val" not in datamodule.datasets:
        _check_without_val(cfg, ckpt_path, datamodule, stored is None and model.num_classes == 2)
    if bool(cfg.get("tta")) and model.num_classes != 2:
        raise ConfigError("tta=true needs a binary (normal/pneumonia) checkpoint")
    if model.num_classes == 2:
        return _evaluate_binary(
            cfg, model, datamodule, checkpoint, stored, ckpt_path, data_scored, seen
        )
    return _evaluate_by_trainer(cfg, model, datamodule)


def _seen_policy(cfg: DictConfig) -> str:
    """``data.seen_films``: what is done with films the model saw (conf/eval.yaml)."""
    return str(OmegaConf.select(cfg, f"data.{SEEN_KEY}", default="exclude"))


def _evaluate_binary(
    cfg: DictConfig,
    model: ClassifierModule,
    datamodule: ChestXRayDataModule,
    checkpoint: Mapping[str, Any],
    stored: OperatingPoint | None,
    ckpt_path: Path,
    data_scored: str,
    seen: SeenCheck | None = None,
) -> dict[str, float]:
    """A binary checkpoint's evaluation pass at its ``stored`` operating point (or one chosen
    again on this data's val split), and a test-only site's report (``seen``: what the
    comparison with the films the model saw found)."""
    from cxrnet.models.checkpoint import finding_points_of, validation_of
    from cxrnet.passes.evaluation_pass import (
        report_settings,
        run_evaluation_pass,
        threshold_films_for,
        threshold_rule,
    )

    threshold_cfg = cfg.get("threshold") or {}
    rechoose = bool(threshold_cfg.get("rechoose")) or stored is None
    if stored is None:
        log.warning("checkpoint %s stores no operating point: choosing one on val", ckpt_path)
    tta = bool(cfg.get("tta"))
    report = run_evaluation_pass(
        model,
        datamodule,
        list(cfg.stages),
        Path(cfg.paths.output_dir),
        rule=threshold_rule(threshold_cfg),
        operating_point=None if rechoose else stored,
        finding_points=None if rechoose else finding_points_of(checkpoint),
        threshold_films=threshold_films_for(threshold_cfg, datamodule) if rechoose else None,
        settings=report_settings(cfg.get("report")),
        checkpoint=str(ckpt_path),
        tta=tta,
        data_scored=data_scored,
    )
    metrics = dict(report.metrics)
    if datamodule.unsplit == "test" and "test" in report.splits:
        from cxrnet.passes.site_pass import evaluate_site

        metrics |= evaluate_site(
            model,
            datamodule,
            report,
            validation_of(checkpoint) if not rechoose else {},
            Path(cfg.paths.output_dir),
            cfg.get("report"),
            tta=tta,
            seen=seen,
        )
    return metrics


def _evaluate_by_trainer(
    cfg: DictConfig, model: ClassifierModule, datamodule: ChestXRayDataModule
) -> dict[str, float]:
    """The subtype task: the trainer's own validation and test passes, as training logs them."""
    from hydra.utils import instantiate

    from cxrnet.hardware import resolve_trainer_precision

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


def _evaluate_ensemble_on_site(
    cfg: DictConfig, manifest_path: Path, explicit: AbstractSet[str], data_group_chosen: bool
) -> dict[str, float]:
    """A fold ensemble (``ensemble.json``) on another site's films, which none of its members
    saw: the mean of their probabilities at the ensemble's operating point, with the site
    report. Its validation sensitivity is the pooled out-of-fold one its threshold was chosen on."""
    from cxrnet.inference.ensemble import MeanProbabilityNet, load_ensemble
    from cxrnet.models.checkpoint import INFERENCE_KEY
    from cxrnet.models.ensemble_manifest import read_manifest
    from cxrnet.models.module import ClassifierModule
    from cxrnet.passes.evaluation_pass import report_settings, run_evaluation_pass
    from cxrnet.passes.evaluation_pass import threshold_rule as rule_of
    from cxrnet.passes.seen_pass import check_seen_films, seen_films_at
    from cxrnet.passes.site_pass import evaluate_site

    if bool((cfg.get("threshold") or {}).get("rechoose")):
        raise ConfigError(
            f"{manifest_path} is a fold ensemble: its operating point was chosen on its members' "
            "pooled out-of-fold predictions; use threshold.rechoose=false"
        )
    allowed = OmegaConf.select(cfg, "model.net.name")
    ensemble = load_ensemble(manifest_path, None if allowed is None else str(allowed))
    metrics_stored = read_manifest(manifest_path).metrics
    net_config = dict(ensemble.members[0].net_config)
    findings = {"findings": list(ensemble.findings)} if ensemble.findings else {}
    model = ClassifierModule(net=net_config, optimizer={"_target_": "torch.optim.Adam"}, **findings)
    model.net = MeanProbabilityNet(
        tuple(member.net for member in ensemble.members), ensemble.findings
    )
    # What datamodule_for reads of a checkpoint: the network's input size, the decoding and
    # (findings members) the findings.
    stamp = {
        "hyper_parameters": {"net": net_config, **findings},
        INFERENCE_KEY: {"preprocessing": ensemble.preprocessing.as_dict()},
    }
    datamodule, data_scored = datamodule_for(cfg, stamp, explicit, data_group_chosen)
    log.info("scoring %s", data_scored)
    if ensemble.findings:
        datamodule.use_findings(ensemble.findings)
    datamodule.setup("test")
    seen = check_seen_films(
        datamodule, seen_films_at(manifest_path), _seen_policy(cfg), Path(cfg.paths.output_dir)
    )
    if "val" not in datamodule.datasets:
        _check_without_val(cfg, manifest_path, datamodule, False)
    tta = bool(cfg.get("tta"))
    k = len(ensemble.members)
    report = run_evaluation_pass(
        model,
        datamodule,
        list(cfg.stages),
        Path(cfg.paths.output_dir),
        rule=rule_of(cfg.get("threshold")),
        operating_point=ensemble.operating_point,
        finding_points=ensemble.finding_points or None,
        settings=report_settings(cfg.get("report")),
        checkpoint=str(manifest_path),
        tta=tta,
        data_scored=data_scored,
        notes=[f"The model is the mean of {k} fold models' probabilities ({manifest_path})."],
    )
    metrics = dict(report.metrics)
    if "test" not in report.splits:
        return metrics
    validation = {
        name: metrics_stored[key]
        for name, key in (
            ("sensitivity", "oof/recall_at_threshold"),
            ("specificity", "oof/specificity_at_threshold"),
        )
        if key in metrics_stored
    }
    return metrics | evaluate_site(
        model,
        datamodule,
        report,
        validation,
        Path(cfg.paths.output_dir),
        cfg.get("report"),
        tta=tta,
        validation_source=(
            "the ensemble's sensitivity on its members' pooled out-of-fold predictions at its "
            "threshold"
        ),
        seen=seen,
    )
