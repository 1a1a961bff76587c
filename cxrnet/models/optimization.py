"""What training changes and how: the optimizer and LR scheduler, and the frozen backbone.

The optimizer and scheduler reach ``ClassifierModule`` as configuration (a ``_target_`` class
path and its arguments) and are kept that way in a checkpoint's hyperparameters, so loading one
imports nothing but the optimizer or scheduler class it names (``component_config``,
``build_component``). The backbone is every parameter outside the network's last Linear layer
(the head): frozen, its parameters get no gradient and its normalisation layers keep their
running statistics.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from cxrnet.plain_data import plain_data
from cxrnet.user_errors import ConfigError

# ``{"_target_": "torch.optim.Adam", "lr": 1e-3}``, or the partial Hydra makes of it.
ComponentConfig = Mapping[str, Any] | functools.partial


def component_config(value: ComponentConfig | Callable[..., Any]) -> dict[str, Any]:
    """An optimizer or scheduler as plain configuration: its class path and its arguments.

    Hydra's ``_partial_: true`` gives a ``functools.partial``; pickled into a checkpoint that is
    a callable, which loading would have to import and run. Stored as configuration it is data.
    """
    if isinstance(value, functools.partial):
        target = value.func
        config = {"_target_": f"{target.__module__}.{target.__qualname__}", **value.keywords}
    elif isinstance(value, Mapping):
        config = {str(key): item for key, item in value.items() if key != "_partial_"}
    elif isinstance(value, type):
        config = {"_target_": f"{value.__module__}.{value.__qualname__}"}
    else:
        raise ConfigError(
            f"expected an optimizer or scheduler as {{'_target_': 'torch.optim.Adam', ...}} or a "
            f"functools.partial of a class, got {value!r}"
        )
    if not isinstance(config.get("_target_"), str):
        raise ConfigError(f"optimizer/scheduler config {config} lacks a '_target_' class path")
    return plain_data(config)  # type: ignore[return-value]


def build_component(config: Mapping[str, Any], base: tuple[type, ...], *args: Any) -> Any:
    """Instantiate ``config`` (from ``component_config``), which must name a subclass of ``base``.

    The class check keeps a checkpoint's stored configuration from calling anything but an
    optimizer or scheduler.
    """
    module_name, _, name = str(config["_target_"]).rpartition(".")
    try:
        target = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as error:
        raise ConfigError(f"cannot import {config['_target_']!r}: {error}") from error
    if not (isinstance(target, type) and issubclass(target, base)):
        names = " or ".join(b.__name__ for b in base)
        raise ConfigError(f"{config['_target_']!r} is not a subclass of {names}")
    kwargs = {key: value for key, value in config.items() if key != "_target_"}
    return target(*args, **kwargs)


def optimizer_settings(
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any] | None,
    scheduler_monitor: str,
    parameters: Iterable[torch.nn.Parameter],
    total_steps: Callable[[], int],
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns: the optimizer over ``parameters``,
    with its scheduler (stepped per ``interval``: epoch or step) when one is configured.

    ``total_steps`` is asked only when the scheduler leaves ``total_steps`` null (one-cycle
    schedules span the whole run, whose length only the Trainer knows).
    """
    built = build_component(optimizer, (Optimizer,), parameters)
    if scheduler is None:
        return built
    config = dict(scheduler)
    # Not an argument of the scheduler: whether it steps per epoch or per training step.
    interval = config.pop("interval", "epoch")
    if interval not in ("epoch", "step"):
        raise ConfigError(f"model.scheduler.interval must be epoch or step, got {interval!r}")
    if "total_steps" in config and config["total_steps"] is None:
        config["total_steps"] = total_steps()
    return {
        "optimizer": built,
        "lr_scheduler": {
            "scheduler": build_component(config, (LRScheduler,), built),
            "monitor": scheduler_monitor,
            "interval": interval,
            "frequency": 1,
        },
    }


def set_backbone_trainable(net: torch.nn.Module, head_name: str, trainable: bool) -> None:
    """Freeze or unfreeze every parameter outside the head; frozen ones get no gradient, so the
    optimizer skips them."""
    for name, parameter in net.named_parameters():
        if not name.startswith(f"{head_name}."):
            parameter.requires_grad_(trainable)


def keep_backbone_statistics(net: torch.nn.Module, head_name: str) -> None:
    """Put the backbone's batch norms in eval mode: in train mode they would still move their
    running statistics towards the new films, and frozen means frozen."""
    for name, module in net.named_modules():
        if isinstance(module, torch.nn.modules.batchnorm._NormBase) and not (
            name == head_name or name.startswith(f"{head_name}.")
        ):
            module.eval()
