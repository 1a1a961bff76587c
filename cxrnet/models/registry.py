"""Networks by name, so configs and checkpoints hold plain values rather than pickled modules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from cxrnet.models.seed_cnn import SeedCNN

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Make ``factory`` available as ``model.net.name=<name>``; names are unique."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = factory


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; choose one of {available_models()} or register your own "
            "with cxrnet.models.register_model"
        ) from None
    return factory(**kwargs)


register_model("seed_cnn", SeedCNN)
