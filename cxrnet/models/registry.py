"""Networks by name, so configs and checkpoints hold plain values rather than pickled modules.

A name resolves, in order, to: a network registered with ``register_model`` (each network module
registers itself where it is defined); ``<family>/<name>`` for a family such as ``timm/resnet18``;
``package.module:Attribute``, imported from the user's own code; or an entry point of the
``cxrnet.models`` group, which is how an installed package contributes networks without cxrnet
importing it by name.

The networks cxrnet ships are listed in ``BUILTIN_NETWORKS`` by the module that registers them,
which is imported when one is first asked for: this module imports no torch, so a command checks
``model.net.name`` in milliseconds (``check_model_name``) and builds the network later.

A name read from a file (a checkpoint, an ensemble's members) is only data: importing the module
it names would run that module's code. ``check_stored_network`` therefore lets through registered
and built-in networks, built-in families and installed entry points, and an import path only when
the user named that same path on the command line.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from cxrnet.user_errors import ConfigError

if TYPE_CHECKING:
    from torch import nn

ENTRY_POINT_GROUP = "cxrnet.models"

NetworkFactory = Callable[..., "nn.Module"]

# Every network cxrnet ships, by the module whose import registers it (tests/models/test_networks.py
# checks that the modules register exactly these).
BUILTIN_NETWORKS: dict[str, str] = {
    "convnext_tiny": "cxrnet.models.convnext",
    "densenet121": "cxrnet.models.densenet",
    "efficientnet_b0": "cxrnet.models.efficientnet",
    "mobilenet_v3_large": "cxrnet.models.mobilenet",
    "mobilenet_v3_small": "cxrnet.models.mobilenet",
    "notebook_cnn": "cxrnet.models.notebook_cnn",
    "resnet18": "cxrnet.models.resnet",
    "resnet34": "cxrnet.models.resnet",
    "resnet50": "cxrnet.models.resnet",
}
BUILTIN_FAMILIES: dict[str, str] = {"timm": "cxrnet.models.timm_nets"}

_REGISTRY: dict[str, NetworkFactory] = {}
_FAMILIES: dict[str, Callable[[str], NetworkFactory]] = {}


def _load_builtin(name: str) -> None:
    """Import the module that registers built-in network ``name`` (once; a no-op for others)."""
    if name in BUILTIN_NETWORKS and name not in _REGISTRY:
        importlib.import_module(BUILTIN_NETWORKS[name])


def register_model(name: str, factory: NetworkFactory) -> None:
    """Make ``factory`` available as ``model.net.name=<name>``; names are unique."""
    _load_builtin(name)  # a built-in name is taken whether or not its module was imported yet
    if name in _REGISTRY and _REGISTRY[name] is not factory:
        raise ValueError(f"a model named {name!r} is already registered")
    _REGISTRY[name] = factory


def register_family(prefix: str, resolve: Callable[[str], NetworkFactory]) -> None:
    """Names ``<prefix>/<rest>`` are resolved by ``resolve(rest)`` (e.g. every timm network)."""
    _FAMILIES[prefix] = resolve


def available_models() -> list[str]:
    """Registered names, entry points included (families and import paths are open-ended)."""
    names = set(_REGISTRY) | set(BUILTIN_NETWORKS)
    names |= {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}
    return sorted(names)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build network ``name`` with ``kwargs`` (every network takes ``num_outputs``)."""
    return resolve_model(name)(**kwargs)


def check_model_name(name: str) -> None:
    """Raise ``ValueError`` (naming every choice) unless ``name`` resolves. A built-in or
    registered name is checked without importing anything; a family, import path or entry point
    is resolved, importing what the user named."""
    if name in _REGISTRY or name in BUILTIN_NETWORKS:
        return
    resolve_model(name)


class UntrustedNetwork(ConfigError):
    """A network named by a file, not by the user, that loading it would have to import."""


def is_trusted_network(name: str) -> bool:
    """True when building ``name`` imports only cxrnet or an installed ``cxrnet.models`` entry
    point; never imports anything to tell."""
    if name in _REGISTRY or name in BUILTIN_NETWORKS:
        return True
    prefix, slash, _ = name.partition("/")
    if slash and (prefix in _FAMILIES or prefix in BUILTIN_FAMILIES):
        return True
    # Any other name resolves to an entry point or to the "not registered" error: no import.
    return ":" not in name


def check_stored_network(name: str, allowed: str | None = None) -> None:
    """Raise ``UntrustedNetwork`` unless network ``name``, read from a file, is trusted or is
    ``allowed``: the ``model.net.name`` the user passed on this command line."""
    if allowed is not None and str(allowed) != name:
        raise UntrustedNetwork(
            f"model.net.name={allowed} was given, but the stored network is {name!r}; pass "
            f"model.net.name={name} to allow importing it, or leave model.net.name out"
        )
    if allowed is None and not is_trusted_network(name):
        raise UntrustedNetwork(
            f"its network {name!r} is an import path, and loading it would import and run "
            f"that module's code; if you trust it, pass model.net.name={name} on the command "
            "line (or install it as a cxrnet.models entry point)"
        )


def resolve_model(name: str) -> NetworkFactory:
    _load_builtin(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix, slash, rest = name.partition("/")
    if slash and prefix in BUILTIN_FAMILIES and prefix not in _FAMILIES:
        importlib.import_module(BUILTIN_FAMILIES[prefix])
    if slash and prefix in _FAMILIES:
        return _FAMILIES[prefix](rest)
    if ":" in name:
        return _import_factory(name)
    for entry_point in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry_point.load()
    families = sorted(set(_FAMILIES) | set(BUILTIN_FAMILIES))
    raise ValueError(
        f"model.net.name={name!r} is not a registered network; choose one of "
        f"{available_models()}, {', '.join(f'{p}/<name>' for p in families)}, an import path "
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
