"""Every shipped configuration composes and builds its objects without Hydra's app machinery."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from omegaconf import OmegaConf

from cxrnet.config import instantiate_group, register_resolvers
from cxrnet.models.module import ClassifierModule
from cxrnet.training.callbacks import FailOnNonFinite, LastCheckpoint

CONF = importlib.resources.files("cxrnet.conf")


def _options(group: str) -> list[str]:
    """A group's options, those of its nested folders too: ``studies/cv_study``."""
    folder = Path(str(CONF.joinpath(group)))
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_composes(compose_cfg, experiment: str) -> None:
    cfg = compose_cfg("train", [f"experiment={experiment}"])
    assert cfg.data._target_.endswith("ChestXRayDataModule")
    assert cfg.monitor.startswith("val/"), "model selection must use validation data"


# Groups whose sub-folders sort options (experiment=studies/cv_study) rather than being groups of
# their own (model/net=resnet18).
OPTION_FOLDERS = ("experiment",)


def _group_options() -> list[tuple[str, str]]:
    """Every option of every config group, nested groups included: ("model/net", "resnet18")."""
    root = Path(str(CONF))
    found = []
    for path in root.rglob("*.yaml"):
        parts = path.relative_to(root).with_suffix("").parts
        if len(parts) < 2:
            continue  # a primary config (train, eval, ...), not a group's option
        if parts[0] in OPTION_FOLDERS:
            found.append((parts[0], "/".join(parts[1:])))
        else:
            found.append(("/".join(parts[:-1]), parts[-1]))
    return sorted(found)


def _own_settings(group: str, option: str) -> tuple[str, dict]:
    """The option file's package (dotted, "" for _global_) and its own keys, as the YAML holds
    them: its defaults list is not its own, and the hydra node is dropped from global ones
    (composed apart, as cxrnet-train's job config never holds it)."""
    path = Path(str(CONF.joinpath(group, f"{option}.yaml")))
    text = path.read_text()
    own = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    own.pop("defaults", None)
    if "# @package _global_" in text.splitlines()[:3]:
        own.pop("hydra", None)
        return "", own
    return group.replace("/", "."), own


def _assert_holds(composed: object, own: object, where: str) -> None:
    """Every key of ``own`` is in ``composed`` with the same value (lists compared whole)."""
    if isinstance(own, dict):
        assert isinstance(composed, dict), f"{where}: {composed!r} is not a mapping"
        for key, value in own.items():
            assert key in composed, f"{where}.{key} missing from the composed config"
            _assert_holds(composed[key], value, f"{where}.{key}")
    else:
        assert composed == own, f"{where}: composed {composed!r}, the option file says {own!r}"


@pytest.mark.parametrize(("group", "option"), _group_options())
def test_every_group_option_composes(group: str, option: str) -> None:
    """Selecting an option puts its own settings into the composed config: nothing selected
    later in a defaults list silently overrides what the option file says."""
    register_resolvers()
    config_name = "search" if group == "hparams_search" else "train"
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module("cxrnet.conf", version_base="1.3"):
            cfg = compose(config_name, overrides=[f"{group}={option}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    package, own = _own_settings(group, option)
    node = OmegaConf.select(cfg, package) if package else cfg
    assert node is not None, f"{group}={option}: nothing composed at {package}"
    composed = OmegaConf.to_container(node, resolve=False)
    _assert_holds(composed, own, package or group)
    # Interpolations the option writes resolve in the composed config (hydra's own need a
    # running job, so only the job's config is resolved).
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    if package.split(".")[0] != "hydra":
        OmegaConf.to_container(OmegaConf.select(job, package) if package else job, resolve=True)


def test_notebook_baseline_is_the_seed_notebook_recipe(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=notebook_baseline"])
    assert cfg.data.image_size == 150
    assert cfg.data.batch_size == 32
    assert cfg.data.imbalance == "class_weight"
    assert dict(cfg.data.augment) == {
        "rotate": 20,
        "zoom": 0.2,
        "shift": 0.1,
        "hflip": True,
        "strength": 1.0,
        "brightness": 0.0,  # intensity augmentation off: the seed notebook had none
        "contrast": 0.0,
        "gamma": 0.0,
        "on_device": False,  # where it runs, not what it draws
    }
    assert cfg.trainer.max_epochs == 6
    assert cfg.model.optimizer.lr == 1e-3
    assert (cfg.model.scheduler.factor, cfg.model.scheduler.patience) == (0.3, 2)
    assert cfg.model.scheduler.min_lr == 1e-6


def test_model_config_instantiates_with_exact_parameter_count(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=notebook_baseline"])
    module = instantiate(cfg.model, class_names=["NORMAL", "PNEUMONIA"], class_weights=[1.94, 0.67])
    assert isinstance(module, ClassifierModule)
    assert sum(p.numel() for p in module.net.parameters() if p.requires_grad) == 844_737


def test_any_value_can_be_overridden(compose_cfg) -> None:
    cfg = compose_cfg("train", ["data.image_size=64", "model.net.dropout=0.5", "seed=7"])
    assert cfg.model.net.image_size == 64  # follows the data size
    assert cfg.model.net.dropout == 0.5
    assert cfg.seed == 7


def test_eval_config_requires_a_checkpoint(compose_cfg) -> None:
    cfg = compose_cfg("eval", [])
    assert cfg.stages == ["test"]
    # No data group: data.root alone names other data (an external site's films); films the
    # model saw are left out of the numbers unless asked.
    assert OmegaConf.to_container(cfg.data) == {"root": None, "seen_films": "exclude"}


@pytest.mark.parametrize(
    ("overrides", "monitor", "mode", "patience"),
    [
        ([], "val/auroc", "max", 5),
        (
            ["monitor=val/loss", "monitor_mode=min", "callbacks.early_stopping.patience=2"],
            "val/loss",
            "min",
            2,
        ),
        # monitor_mode follows the metric when not set.
        (["monitor=val/loss"], "val/loss", "min", 5),
    ],
)
def test_early_stopping_callbacks_are_built_into_objects(
    compose_cfg, overrides: list[str], monitor: str, mode: str, patience: int
) -> None:
    cfg = compose_cfg("train", ["callbacks=early_stopping", *overrides])
    callbacks = instantiate_group(cfg.callbacks)
    by_type = {type(callback): callback for callback in callbacks}
    assert set(by_type) == {
        EarlyStopping,
        ModelCheckpoint,
        LearningRateMonitor,
        FailOnNonFinite,
        LastCheckpoint,
    }
    stopping, checkpoint = by_type[EarlyStopping], by_type[ModelCheckpoint]
    assert (stopping.monitor, stopping.mode, stopping.patience) == (monitor, mode, patience)
    # It stops on the very metric and direction the best checkpoint is chosen by.
    assert (checkpoint.monitor, checkpoint.mode) == (monitor, mode)
    assert Path(checkpoint.dirpath) == Path(cfg.paths.output_dir) / "checkpoints"
    assert by_type[LastCheckpoint].path == Path(checkpoint.dirpath) / "last.ckpt"


def test_best_cv_is_best_on_patient_grouped_folds_with_a_fixed_holdout(compose_cfg) -> None:
    best = compose_cfg("train", ["experiment=best"])
    cv = compose_cfg("train", ["experiment=best_cv"])
    split_keys = ("split", "num_folds", "fold", "holdout_fraction", "holdout_seed")
    for key, value in best.data.items():
        if key not in split_keys:
            assert cv.data[key] == value, f"data.{key}: best_cv trains best's recipe"
    assert cv.model == best.model and cv.trainer == best.trainer
    assert (cv.data.split, cv.data.num_folds) == ("kfold", 5)
    # Carved once, by its own seed, before the folds: the same held-out films for every fold.
    assert cv.data.holdout_fraction > 0 and cv.data.holdout_seed is not None
    assert cv.threshold.criterion == best.threshold.criterion
    # The studies' held-out films, so best's held-out numbers sit beside theirs.
    study = compose_cfg("train", ["experiment=studies/cv_study"])
    for key in ("holdout_fraction", "holdout_seed", "split_seed", "num_folds"):
        assert cv.data[key] == study.data[key], key
