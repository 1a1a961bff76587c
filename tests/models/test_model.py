from __future__ import annotations

import pytest
import torch

from cxrnet.models import NotebookCNN, available_models, count_trainable_parameters, create_model


def test_notebook_cnn_has_exactly_the_keras_parameter_total() -> None:
    # DESIGN.md: 844,737 trainable parameters at 150x150 (Keras shows 845,121 with BN statistics).
    model = NotebookCNN()
    assert count_trainable_parameters(model) == 844_737
    buffers = sum(b.numel() for name, b in model.named_buffers() if "running" in name)
    assert count_trainable_parameters(model) + buffers == 845_121


def test_notebook_cnn_pools_round_up_to_10x10() -> None:
    model = NotebookCNN()
    features = model.features(torch.zeros(2, 1, 150, 150))
    assert features.shape == (2, 64, 10, 10)
    assert model(torch.zeros(2, 1, 150, 150)).shape == (2, 1)


@pytest.mark.parametrize("size", [32, 64, 97, 224])
def test_notebook_cnn_any_input_size(size: int) -> None:
    model = NotebookCNN(image_size=size, num_outputs=3)
    assert model(torch.rand(3, 1, size, size)).shape == (3, 3)


def test_widths_and_dropout_are_configurable() -> None:
    small = NotebookCNN(widths=(8, 8, 16, 16), hidden=32, dropout=0.5)
    assert count_trainable_parameters(small) < count_trainable_parameters(NotebookCNN())
    assert small.head[3].p == 0.5
    with pytest.raises(ValueError, match="exactly 4 block widths"):
        NotebookCNN(widths=(8, 8, 16))


def test_keras_layer_order_conv_relu_batchnorm_pool() -> None:
    block = NotebookCNN().features[1]
    kinds = [type(layer).__name__ for layer in block]
    assert kinds == ["SeparableConv2d", "ReLU", "BatchNorm2d", "MaxPool2d"]
    assert block[0].depthwise.bias is None and block[0].pointwise.bias is not None


def test_registry_builds_by_name_and_rejects_unknown() -> None:
    assert "notebook_cnn" in available_models()
    assert isinstance(create_model("notebook_cnn", image_size=64), NotebookCNN)
    with pytest.raises(ValueError, match=r"name='resnet9000' is not a registered network"):
        create_model("resnet9000")
