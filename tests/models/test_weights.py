"""Local pretrained weights: a torchvision state dict on disk, loaded through model.net.weights."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torchvision.models import resnet18, resnet34

from cxrnet.models import create_model
from cxrnet.models.module import ClassifierModule
from cxrnet.models.weights import load_weights


@pytest.fixture
def imagenet_style_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """What a user downloads once: torchvision's RGB, 1000-class ResNet-18 state dict."""
    torch.manual_seed(1)
    state = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18_imagenet.pth"
    torch.save(state, path)
    return path, state


def test_a_torchvision_state_dict_loads_with_its_stem_adapted_and_head_replaced(
    imagenet_style_file,
) -> None:
    path, state = imagenet_style_file
    model = create_model("resnet18", num_outputs=1)
    fresh_head = model.fc.weight.detach().clone()
    report = load_weights(model, path)
    assert report.adapted_stem == ["conv1.weight"]
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    torch.testing.assert_close(model.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(model.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    torch.testing.assert_close(model.bn1.running_var, state["bn1.running_var"])
    assert sorted(report.replaced_head) == ["fc.bias", "fc.weight"]
    torch.testing.assert_close(model.fc.weight, fresh_head)  # the 1000-class head is not used
    assert report.missing == [] and report.unexpected == []


def test_a_grey_image_gives_the_rgb_network_s_stem_response(imagenet_style_file) -> None:
    path, _ = imagenet_style_file
    rgb = resnet18(weights=None)
    rgb.load_state_dict(torch.load(path, weights_only=True))
    grey = create_model("resnet18", num_outputs=1)
    load_weights(grey, path)
    image = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(grey.conv1(image), rgb.conv1(image.expand(-1, 3, -1, -1)))


def test_weights_through_the_classifier_config_and_from_a_lightning_checkpoint(
    imagenet_style_file, tmp_path: Path
) -> None:
    path, state = imagenet_style_file
    optimizer = functools.partial(torch.optim.Adam, lr=1e-3)
    module = ClassifierModule(net={"name": "resnet18", "weights": str(path)}, optimizer=optimizer)
    torch.testing.assert_close(module.net.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    checkpoint = tmp_path / "run.ckpt"  # this project's checkpoints prefix keys with "net."
    torch.save({"state_dict": module.state_dict(), "epoch": 3}, checkpoint)
    again = create_model("resnet18", num_outputs=1)
    report = load_weights(again, checkpoint)
    assert report.adapted_stem == [] and report.replaced_head == []
    torch.testing.assert_close(again.fc.weight, module.net.fc.weight)


def test_a_file_for_another_network_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(resnet34(weights=None).state_dict(), path)
    with pytest.raises(ValueError, match=r"resnet34.pth does not fit ResNet .*model.net.name"):
        load_weights(create_model("resnet50", num_outputs=1), path)


def test_a_missing_or_unreadable_file_names_the_file(tmp_path: Path) -> None:
    model = create_model("resnet18", num_outputs=1)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth: no such file"):
        load_weights(model, tmp_path / "nowhere.pth")
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(ValueError, match=r"notes\.pth: not a readable PyTorch weights file"):
        load_weights(model, tmp_path / "notes.pth")


def test_the_backbone_is_frozen_for_the_first_epochs_only() -> None:
    module = ClassifierModule(
        net={"name": "resnet18", "freeze_backbone_epochs": 1},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    seen: dict[int, tuple[bool, bool]] = {}

    class Watch(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:
            net = pl_module.net
            seen[trainer.current_epoch] = (
                net.layer1[0].conv1.weight.grad is not None,
                net.fc.weight.grad is not None,
            )

    torch.manual_seed(0)
    data = TensorDataset(torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Watch()],
    )
    trainer.fit(module, DataLoader(data, batch_size=4))
    assert seen == {0: (False, True), 1: (True, True)}


def test_a_checkpoint_rebuilds_without_the_original_weights_file(
    imagenet_style_file, tmp_path: Path
) -> None:
    path, _ = imagenet_style_file
    module = ClassifierModule(
        net={"name": "resnet18", "weights": str(path)},
        optimizer=functools.partial(torch.optim.Adam, lr=1e-3),
    )
    checkpoint = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    path.unlink()  # the user moved or deleted it after training
    rebuilt = ClassifierModule(**checkpoint["hyper_parameters"])
    rebuilt.load_state_dict(checkpoint["state_dict"])
    assert checkpoint["hyper_parameters"]["net"]["initial_weights"] == str(path)
    torch.testing.assert_close(rebuilt.net.conv1.weight, module.net.conv1.weight)
