"""Fitting general-purpose networks to one-channel films: the stem, the head, the parameter count.

One rule turns a three-channel stem into a one-channel stem, for random and for pretrained
kernels alike: sum the RGB kernels. A grey image is R = G = B, so the summed kernel gives the same
response the RGB network would; and for random Kaiming kernels the sum of three has exactly the
variance Kaiming prescribes for the smaller fan-in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from cxrnet.models.registry import NetworkFactory


def sum_rgb_kernels(weight: Tensor) -> Tensor:
    """A ``(out, 3, kh, kw)`` convolution weight as ``(out, 1, kh, kw)``."""
    return weight.sum(dim=1, keepdim=True)


def stem_conv_name(model: nn.Module) -> str:
    """The name of the first convolution, the one that sees the image."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name
    raise ValueError(f"{type(model).__name__} has no Conv2d layer to adapt to one channel")


def one_channel_stem(model: nn.Module) -> nn.Module:
    """Replace the first convolution (3 input channels) by a 1-channel one with summed kernels."""
    name = stem_conv_name(model)
    old: nn.Conv2d = model.get_submodule(name)
    if old.in_channels == 1:
        return model
    if old.in_channels != 3 or old.groups != 1:
        raise ValueError(f"{name}: expected an RGB stem convolution, got {old}")
    new = nn.Conv2d(
        1,
        old.out_channels,
        old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    with torch.no_grad():
        new.weight.copy_(sum_rgb_kernels(old.weight))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model


def classifier_name(model: nn.Module) -> str:
    """The name of the last linear layer: the head that ``num_outputs`` sizes."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no Linear layer to use as its head")
    return names[-1]


def count_trainable_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def torchvision_factory(builder: Callable[..., nn.Module]) -> NetworkFactory:
    """A registry factory for a torchvision builder: untrained (nothing downloads), a head of
    ``num_outputs`` and, for ``in_channels=1``, a one-channel stem."""

    def factory(num_outputs: int = 1, in_channels: int = 1, **kwargs: Any) -> nn.Module:
        model = builder(weights=None, num_classes=num_outputs, **kwargs)
        if in_channels == 1:
            one_channel_stem(model)
        elif in_channels != 3:
            raise ValueError(f"{builder.__name__}: in_channels must be 1 or 3, got {in_channels}")
        return model

    factory.__name__ = factory.__qualname__ = builder.__name__
    factory.__doc__ = f"torchvision's {builder.__name__}, untrained, for one-channel films."
    return factory
