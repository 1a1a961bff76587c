"""Fine-tuning from a cxrnet checkpoint (issue 19 item 4): ``cxrnet-train experiment=finetune
model.net.weights=<ckpt>`` starts from the checkpoint's weights, at a tenth of the recipe's
learning rate, and ``model.freeze_backbone=true`` trains only the head (the last Linear layer),
the backbone's weights and batch-norm statistics kept as loaded."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch
from helpers.console import QUICK, run_folder, run_train

from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.module import ClassifierModule
from cxrnet.user_errors import ConfigError

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]
LAST_LINEAR = "net.head.4."  # notebook_cnn's output layer: the head that freeze_backbone trains


def _best_checkpoint(run: Path) -> Path:
    return Path(json.loads((run / "metrics.json").read_text())["paths"]["best_checkpoint"])


def _train(tmp_path: Path, *args: str) -> Path:
    done = run_train([*FAST, f"paths.log_dir={tmp_path}", *args], tmp_path)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return run_folder(done.stdout)


@pytest.fixture(scope="module")
def public_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The best checkpoint of a tiny run of the recipe fine-tuning starts from."""
    return _best_checkpoint(_train(tmp_path_factory.mktemp("public"), "experiment=best"))


@pytest.mark.slow
def test_finetune_starts_from_the_checkpoints_weights(
    public_checkpoint: Path, tmp_path: Path
) -> None:
    # At a learning rate of 0 the weights never move: the fine-tuned checkpoint's parameters are
    # the ones it started from, which must be the public checkpoint's, head included.
    run = _train(
        tmp_path,
        "experiment=finetune",
        f"model.net.weights={public_checkpoint}",
        "model.optimizer.lr=0",
    )
    source = load_checkpoint(public_checkpoint)
    tuned = load_checkpoint(_best_checkpoint(run))
    parameters = [
        name
        for name in source["state_dict"]
        if name.startswith("net.")
        and not name.endswith(("running_mean", "running_var", "num_batches_tracked"))
    ]
    assert len(parameters) > 10
    for name in parameters:
        assert torch.equal(source["state_dict"][name], tuned["state_dict"][name]), name
    net = tuned["hyper_parameters"]["net"]
    assert net["initial_weights"] == str(public_checkpoint)


@pytest.mark.slow
def test_finetune_with_a_frozen_backbone_trains_only_the_head(
    public_checkpoint: Path, tmp_path: Path
) -> None:
    run = _train(
        tmp_path,
        "experiment=finetune",
        f"model.net.weights={public_checkpoint}",
        "model.freeze_backbone=true",
    )
    source = load_checkpoint(public_checkpoint)["state_dict"]
    tuned = load_checkpoint(_best_checkpoint(run))
    assert tuned["hyper_parameters"]["optimizer"]["lr"] == pytest.approx(1e-4)
    changed = [name for name in source if not torch.equal(source[name], tuned["state_dict"][name])]
    # Everything outside the last Linear layer (weights and batch-norm statistics) is as
    # loaded; the head trained.
    assert changed and all(name.startswith(LAST_LINEAR) for name in changed), changed


def test_finetune_without_weights_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    done = run_train([*FAST, f"paths.log_dir={tmp_path}", "experiment=finetune"], tmp_path)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "model.net.weights is required here (experiment=finetune)" in done.stdout + done.stderr


def test_finetune_recipe_is_best_at_a_tenth_of_its_learning_rate(compose_cfg) -> None:
    best = compose_cfg("train", ["experiment=best"])
    tuned = compose_cfg("train", ["experiment=finetune", "model.net.weights=x.ckpt"])
    assert tuned.model.optimizer.lr == pytest.approx(best.model.optimizer.lr / 10)
    assert tuned.data.image_size == best.data.image_size
    assert tuned.model.net.name == best.model.net.name
    assert tuned.model.freeze_backbone is False and best.model.freeze_backbone is False


def test_freeze_backbone_and_freeze_backbone_epochs_exclude_each_other() -> None:
    net = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}
    with pytest.raises(ConfigError, match="set one of them"):
        ClassifierModule(
            net={**net, "freeze_backbone_epochs": 2},
            optimizer=functools.partial(torch.optim.Adam),
            freeze_backbone=True,
        )
    module = ClassifierModule(
        net=net, optimizer=functools.partial(torch.optim.Adam), freeze_backbone=True
    )
    trainable = [name for name, p in module.net.named_parameters() if p.requires_grad]
    assert trainable == ["head.4.weight", "head.4.bias"]
