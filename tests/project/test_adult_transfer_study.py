"""experiments/adult_transfer: every arm composes, experiment=adult is the studied recipe setting
by setting, and the analysis's numbers recomputed by hand on predictions written here."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.experiment_scripts import EXPERIMENTS, load_script
from omegaconf import OmegaConf

from cxrnet.evaluation.report import SplitPredictions

STUDY = EXPERIMENTS / "adult_transfer"
sys.path.insert(0, str(STUDY))  # the study's scripts import each other as run.py does
arms = load_script("adult_transfer", "arms")
run = load_script("adult_transfer", "run")
analysis = load_script("adult_transfer", "analysis")

# What experiment=adult must share with the arm it was chosen from: every setting the study
# varied or fixed for its arms, apart from where the films are and which fold validates.
RECIPE_KEYS = (
    "data.image_size",
    "data.resize",
    "data.equalize",
    "data.interpolation",
    "data.augment",
    "data.imbalance",
    "data.source_balance",
    "data.batch_size",
    "model.net",
    "model.optimizer",
    "model.scheduler",
    "model.label_smoothing",
    "model.freeze_backbone",
    "trainer.max_epochs",
    "threshold.criterion",
    "monitor",
)


def _arm_overrides(arm, tmp_path: Path) -> list[str]:
    out, manifests = tmp_path / "out", tmp_path / "manifests"
    if arm.kind == "finetune":  # the pediatric model it starts from, as the runner finds it
        job = out / "runs" / run.PEDIATRIC_MODEL / "0"
        job.mkdir(parents=True)
        (job / "metrics.json").write_text(
            '{"status": "completed", "paths": {"best_checkpoint": "/m.ckpt"}, "metrics": {}}'
        )
    settings = run.train_settings(arm, out, manifests, tmp_path / "cache")
    swept = [*run.LIGHT_REPORT, *arm.overrides]
    return [*settings, *swept]


def _value(cfg, key: str):
    value = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


@pytest.mark.parametrize("arm", arms.ARMS, ids=lambda arm: arm.name)
def test_every_arm_composes_into_a_valid_config(arm, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(overrides=_arm_overrides(arm, tmp_path))
    sources = OmegaConf.to_container(cfg.data.sources, resolve=True)
    assert "peds_test" in sources  # every arm is scored on the held-out children
    if arm.folds:
        assert (cfg.data.split, cfg.data.num_folds) == ("kfold", 5)
        assert str(sources["rsna"]).endswith("adult.csv")
    if arm.kind == "joint":
        assert cfg.data.source_roles.peds == "train"  # children train, never validate
    if arm.adult is not None:
        assert cfg.data.source_train_size.rsna == arm.adult


def test_experiment_adult_is_the_chosen_arm_setting_by_setting(compose_cfg, tmp_path) -> None:
    chosen = arms.BY_NAME[arms.CHOSEN]
    studied = compose_cfg(overrides=_arm_overrides(chosen, tmp_path))
    recipe = compose_cfg(overrides=["experiment=adult", "data.sources={peds: a, site: b}"])
    for key in RECIPE_KEYS:
        assert _value(recipe, key) == _value(studied, key), key
    # The roles the study gave its sources, under the recipe's names for them.
    assert recipe.data.source_roles.peds == "train"


def _predictions(probabilities, labels, views) -> SplitPredictions:
    n = len(labels)
    return SplitPredictions(
        np.asarray(probabilities, dtype=np.float64),
        np.asarray(labels, dtype=np.int64),
        tuple(f"f{i}" for i in range(n)),
        ("normal",) * n,
        tuple(f"p{i}" for i in range(n)),
        {"view": tuple(views)},
    )


def test_scores_within_a_view_use_that_views_films_only() -> None:
    predictions = _predictions(
        [0.9, 0.2, 0.6, 0.7, 0.1, 0.4], [1, 0, 1, 1, 0, 0], ["PA", "PA", "PA", "AP", "AP", "AP"]
    )
    thresholds = np.full(6, 0.5)
    result = analysis.per_view(predictions, thresholds)
    assert result["all"]["auroc"] == pytest.approx(1.0)
    assert result["PA"]["films"] == 3 and result["AP"]["films"] == 3
    # PA: pneumonia 0.9, 0.6 above the normal 0.2; AP: 0.7 above 0.1 and 0.4.
    assert result["PA"]["sensitivity"] == pytest.approx(1.0)
    assert result["AP"]["specificity"] == pytest.approx(1.0)
    tied = _predictions([0.3, 0.3, 0.3, 0.3], [1, 0, 1, 0], ["PA", "PA", "AP", "AP"])
    assert analysis.per_view(tied, np.full(4, 0.5))["PA"]["auroc"] == pytest.approx(0.5)


def test_the_flag_rate_counts_pneumonia_calls_per_view() -> None:
    rows = [
        {"view": "PA", "prediction": "PNEUMONIA"},
        {"view": "PA", "prediction": "NORMAL"},
        {"view": "AP", "prediction": "PNEUMONIA"},
        {"view": "AP", "prediction": "PNEUMONIA"},
    ]
    flagged = analysis._flagged(rows)
    assert flagged == {"all": 0.75, "PA": 0.5, "AP": 1.0}


def test_the_paired_flag_rate_is_the_difference_on_the_same_other_abnormal_films() -> None:
    empty = SplitPredictions(np.zeros(0), np.zeros(0, dtype=np.int64), (), ())
    calls_a = {f"f{i}.png": (i < 6, "PA" if i % 2 else "AP") for i in range(10)}
    calls_b = {f"f{i}.png": (i < 3, "PA" if i % 2 else "AP") for i in range(10)}

    def result(calls: dict) -> object:
        arm = arms.BY_NAME["findings_all"]
        return analysis.ArmResult(arm, 5, {}, {}, 10, 0, 0, 0, 0, empty, calls)

    delta = analysis.paired_flag_delta(result(calls_a), result(calls_b))
    assert delta["all"] == pytest.approx(0.6 - 0.3)
    # PA films are the odd ones: a flags 1, 3, 5, b flags 1 of the five.
    assert delta["PA"] == pytest.approx(3 / 5 - 1 / 5)
    assert delta["all_low"] <= delta["all"] <= delta["all_high"]
    with pytest.raises(ValueError, match="different OTHER_ABNORMAL films"):
        analysis.paired_flag_delta(result(calls_a), result({"x.png": (True, "PA")}))
