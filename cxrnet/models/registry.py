"""Networks by name, so configs and checkpoints hold plain values rather than pickled modules.

A name resolves, in order, to: a network registered with ``register_model`` (each network module
registers itself where it is defined); ``<family>/<name>`` for a family such as ``timm/resnet18``;
``package.module:Attribute``, imported from the user's own code; or an entry point of the
``cxrnet.models`` group, which is how an installed package contributes networks without cxrnet
importing it by name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from torch import nn

ENTRY_POINT_GROUP = "cxrnet.models"

NetworkFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, NetworkFactory] = {}
_FAMILIES: dict[str, Callable[[str], NetworkFactory]] = {}


def register_model(name: str, factory: NetworkFactory) -> None:
    """Make ``factory`` available as ``model.net.name=<name>``; names are unique."""
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = factory


def register_family(prefix: str, resolve: Callable[[str], NetworkFactory]) -> None:
    """Names ``<prefix>/<rest>`` are resolved by ``resolve(rest)`` (e.g. every timm network)."""
    _FAMILIES[prefix] = resolve


def available_models() -> list[str]:
    """Registered names, entry points included (families and import paths are open-ended)."""
    names = set(_REGISTRY)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build network ``name`` with ``kwargs`` (every network takes ``num_outputs``)."""
    return resolve_model(name)(**kwargs)


def resolve_model(name: str) -> NetworkFactory:
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, slash, rest = name.partition("/")
    if slash and prefix in _FAMILIES:
        return _FAMILIES[prefix](rest)
    if ":" in name:
        return _import_factory(name)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry_point.load()
    raise ValueError(
        f"model.net.name={name!r} is not a registered network; choose one of "
        f"{available_models()}, "
        f"{', '.join(f'{p}/<name>' for p in sorted(_FAMILIES))}, an import path "
        "'package.module:Class', or register your own with cxrnet.models.register_model"
    )


def _import_factory(path: str) -> NetworkFactory:
    module_name, _, attribute = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(
            f"model.net.name={path}: cannot import module {module_name!r} ({error}); "
            "install the package or put its folder on PYTHONPATH"
        ) from error
    factory = module
    for part in attribute.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(
                f"model.net.name={path}: module {module_name!r} has no attribute {attribute!r}"
            )
    if not callable(factory):
        raise ValueError(f"model.net.name={path}: {attribute!r} is not a class or function")
    return factory
