"""Every network of the registry, user networks by import path and entry point, their configs."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.console import run_train
from hydra.utils import instantiate

from cxrnet.models import available_models, count_trainable_parameters, create_model
from cxrnet.models.adapt import classifier_name, stem_conv_name
from cxrnet.models.registry import resolve_model

# Trainable parameters with a one-channel stem and one output: the architecture, not a metric.
# The notebook CNN's count depends on the input size (its dense layer), here 64 px.
PARAMETERS_AT_64PX = {
    "notebook_cnn": 156_609,
    "resnet18": 11_170_753,
    "resnet34": 21_278_913,
    "resnet50": 23_503_809,
    "densenet121": 6_948_609,
    "efficientnet_b0": 4_008_253,
    "mobilenet_v3_small": 1_518_593,
    "mobilenet_v3_large": 4_203_025,
    "convnext_tiny": 27_817_825,
}


def test_the_registry_offers_every_network_of_the_catalogue() -> None:
    assert set(PARAMETERS_AT_64PX) <= set(available_models())


def _train_step(model: torch.nn.Module, size: int = 64) -> tuple[float, float]:
    """One Adam step on a batch of two; returns the loss before and after it."""
    torch.manual_seed(0)
    images, targets = torch.rand(2, 1, size, size), torch.tensor([0.0, 1.0])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    loss = F.binary_cross_entropy_with_logits(model(images).squeeze(-1), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.eval()  # dropout and batch statistics off, so "after" is a plain forward pass
    with torch.no_grad():
        after = F.binary_cross_entropy_with_logits(model(images).squeeze(-1), targets)
    return float(loss.detach()), float(after)


@pytest.mark.parametrize("name", sorted(PARAMETERS_AT_64PX))
def test_every_network_trains_a_step_at_64px_on_one_channel(name: str) -> None:
    kwargs = {"image_size": 64} if name == "notebook_cnn" else {}
    model = create_model(name, num_outputs=1, **kwargs)
    parameters = count_trainable_parameters(model)
    print(f"{name}: {parameters:,} trainable parameters")
    assert parameters == PARAMETERS_AT_64PX[name]
    assert model.get_submodule(stem_conv_name(model)).in_channels == 1
    assert model.get_submodule(classifier_name(model)).out_features == 1
    before, after = _train_step(model)
    assert torch.isfinite(torch.tensor([before, after])).all()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_multiclass_heads_follow_num_outputs() -> None:
    model = create_model("resnet18", num_outputs=3)
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3)


def test_timm_networks_are_built_untrained_with_a_one_channel_stem() -> None:
    pytest.importorskip("timm")
    model = create_model("timm/resnet18", num_outputs=1)
    assert model.get_submodule(stem_conv_name(model)).in_channels == 1
    _train_step(model)
    with pytest.raises(ValueError, match="timm has no network 'no_such_net'"):
        create_model("timm/no_such_net")


def _write_user_package(folder: Path) -> Path:
    package = folder / "userpkg_cxr"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(
        textwrap.dedent(
            """
            from torch import nn

            class TinyNet(nn.Module):
                def __init__(self, num_outputs: int = 1, width: int = 4) -> None:
                    super().__init__()
                    self.body = nn.Sequential(
                        nn.Conv2d(1, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
                    )
                    self.head = nn.Linear(width, num_outputs)

                def forward(self, x):
                    return self.head(self.body(x))
            """
        )
    )
    return folder


def test_a_network_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(_write_user_package(tmp_path)))
    model = create_model("userpkg_cxr.nets:TinyNet", num_outputs=1, width=6)
    assert type(model).__name__ == "TinyNet" and model.head.in_features == 6
    with pytest.raises(ValueError, match="has no attribute 'Nope'"):
        create_model("userpkg_cxr.nets:Nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_pkg"):
        create_model("no_such_pkg.nets:Net")


def test_a_network_from_a_cxrnet_models_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An installed package declares ``[project.entry-points."cxrnet.models"]``."""
    _write_user_package(tmp_path)
    dist_info = tmp_path / "userpkg_cxr-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: userpkg-cxr\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[cxrnet.models]\ntiny_from_entry_point = userpkg_cxr.nets:TinyNet\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "tiny_from_entry_point" in available_models()
    model = create_model("tiny_from_entry_point", num_outputs=2)
    assert model(torch.rand(3, 1, 16, 16)).shape == (3, 2)


@pytest.mark.slow
def test_a_network_by_import_path_trains_from_cxrnet_train(tmp_path: Path) -> None:
    user_code = {"PYTHONPATH": str(_write_user_package(tmp_path / "src"))}
    done = run_train(
        [
            "debug=fast",
            "model/net=custom",
            "model.net.name=userpkg_cxr.nets:TinyNet",
            "+model.net.width=5",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
        env=user_code,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = Path(done.stdout.split("run folder: ")[1].split()[0])
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert "val/auroc" in record["metrics"]


@pytest.mark.parametrize(
    ("net", "network_class"),
    [("notebook_cnn", "NotebookCNN"), ("resnet18", "ResNet"), ("densenet121", "DenseNet")],
)
def test_each_network_is_a_config_option(compose_cfg, net: str, network_class: str) -> None:
    cfg = compose_cfg("train", [f"model/net={net}", "data.image_size=64"])
    assert cfg.model.net.name == net
    assert cfg.model.net.weights is None and cfg.model.net.freeze_backbone_epochs == 0
    module = instantiate(cfg.model, class_names=["NORMAL", "PNEUMONIA"])
    assert type(module.net).__name__ == network_class


def test_every_network_config_names_a_network_the_registry_builds(compose_cfg) -> None:
    folder = Path(__file__).resolve().parents[2] / "conf" / "model" / "net"
    for option in sorted(p.stem for p in folder.glob("*.yaml")):
        if option == "custom":
            continue
        name = compose_cfg("train", [f"model/net={option}"]).model.net.name
        if name.startswith("timm/") and importlib.util.find_spec("timm") is None:
            continue
        assert resolve_model(name), option
