"""The recipe options the studies sweep: optimizer and scheduler groups, label smoothing, CLAHE."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from cxrnet.data.cache_entry import cache_key
from cxrnet.data.decode import DecodeParams, fit_to_square
from cxrnet.data.records import make_record
from cxrnet.models.module import ClassifierModule

NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}


def _module_from(compose_cfg, *overrides: str) -> ClassifierModule:
    cfg = compose_cfg("train", [*overrides, "data.image_size=32"])
    return instantiate(cfg.model)


def test_label_smoothing_moves_binary_targets_towards_one_half(compose_cfg) -> None:
    module = _module_from(compose_cfg, "model.label_smoothing=0.2")
    logits = torch.tensor([[0.3], [-1.2], [2.0]])
    targets = torch.tensor([0, 1, 1])
    expected = F.binary_cross_entropy_with_logits(logits.squeeze(-1), torch.tensor([0.1, 0.9, 0.9]))
    assert torch.allclose(module.loss(logits, targets), expected)


def test_label_smoothing_of_three_classes_is_cross_entropys_own() -> None:
    module = ClassifierModule(
        net=NET,
        optimizer={"_target_": "torch.optim.Adam"},
        class_names=("NORMAL", "BACTERIA", "VIRUS"),
        label_smoothing=0.1,
    )
    logits = torch.tensor([[0.3, -0.2, 1.0], [2.0, 0.1, -1.0]])
    targets = torch.tensor([2, 0])
    expected = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert torch.allclose(module.loss(logits, targets), expected)


@pytest.mark.parametrize("value", [-0.1, 1.0])
def test_label_smoothing_outside_zero_to_one_is_refused(value: float) -> None:
    with pytest.raises(ValueError, match="label_smoothing"):
        ClassifierModule(net=NET, optimizer={"_target_": "torch.optim.Adam"}, label_smoothing=value)


def test_adamw_and_cosine_come_from_their_groups(compose_cfg) -> None:
    module = _module_from(
        compose_cfg,
        "model/optimizer=adamw",
        "model.optimizer.weight_decay=0.05",
        "model/scheduler=cosine",
        "trainer.max_epochs=12",
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    assert scheduler.T_max == 12
    assert config["lr_scheduler"]["interval"] == "epoch"


def test_onecycle_steps_every_batch_over_the_trainers_run(compose_cfg) -> None:
    module = _module_from(compose_cfg, "model/scheduler=onecycle", "model.optimizer.lr=0.01")
    # configure_optimizers reads the run's length from the Trainer it is attached to.
    module._trainer = SimpleNamespace(estimated_stepping_batches=120)  # type: ignore[assignment]
    config = module.configure_optimizers()
    scheduler = config["lr_scheduler"]["scheduler"]
    assert isinstance(scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert scheduler.total_steps == 120
    assert config["lr_scheduler"]["interval"] == "step"
    assert math.isclose(max(g["max_lr"] for g in config["optimizer"].param_groups), 0.01)


def test_the_notebook_recipe_combines_with_another_schedule(compose_cfg) -> None:
    cfg = compose_cfg("train", ["experiment=notebook_baseline", "model/scheduler=cosine"])
    assert cfg.model.scheduler._target_.endswith("CosineAnnealingLR")
    assert "factor" not in cfg.model.scheduler
    seed = compose_cfg("train", ["experiment=notebook_baseline"])
    assert seed.model.scheduler._target_.endswith("ReduceLROnPlateau")
    assert (seed.model.scheduler.factor, seed.model.scheduler.patience) == (0.3, 2)


def test_a_bad_scheduler_interval_names_the_setting(compose_cfg) -> None:
    module = _module_from(compose_cfg, "model/scheduler=cosine", "+model.scheduler.interval=batch")
    with pytest.raises(Exception, match=r"model\.scheduler\.interval"):
        module.configure_optimizers()


def _dull_film() -> np.ndarray:
    rows = np.linspace(100, 140, 96, dtype=np.float64)
    return np.tile(rows[:, None], (1, 80)).astype(np.uint8)


def test_clahe_raises_local_contrast_but_less_than_global_equalization() -> None:
    film = _dull_film()
    plain = fit_to_square(film, DecodeParams(image_size=64))
    hist = fit_to_square(film, DecodeParams(image_size=64, equalize="hist"))
    clahe = fit_to_square(film, DecodeParams(image_size=64, equalize="clahe"))
    spread = {name: int(a.max()) - int(a.min()) for name, a in [("plain", plain), ("hist", hist)]}
    clahe_spread = int(clahe.max()) - int(clahe.min())
    assert spread["plain"] < clahe_spread < spread["hist"]


def test_equalize_accepts_the_old_booleans_and_refuses_unknown_modes() -> None:
    assert DecodeParams(equalize=True) == DecodeParams(equalize="hist")
    assert DecodeParams(equalize=False) == DecodeParams(equalize="none")
    with pytest.raises(ValueError, match="equalize must be one of none, hist, clahe"):
        DecodeParams(equalize="adaptive")  # type: ignore[arg-type]


def test_each_equalization_has_its_own_cache_key(tmp_path) -> None:
    path = tmp_path / "NORMAL" / "IM-0001-0001.jpeg"
    path.parent.mkdir()
    Image.fromarray(_dull_film()).save(path)
    records = [make_record(path, 0, "train")]
    keys = {
        mode: cache_key(records, DecodeParams(32, equalize=mode))
        for mode in ("none", "hist", "clahe")
    }
    assert len(set(keys.values())) == 3
    assert "-clahe-" in keys["clahe"] and "-eq-" in keys["hist"]
