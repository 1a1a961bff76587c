"""Networks as plain ``nn.Module``s, each registering itself on import, and the LightningModule.

The registry is imported here; the network modules (torch, torchvision) only when a network or
one of them is asked for, so ``import cxrnet.models`` and a check of ``model.net.name`` stay
light (``registry.BUILTIN_NETWORKS``).
"""

from __future__ import annotations

import importlib
from typing import Any

from cxrnet.models.registry import (
    ENTRY_POINT_GROUP,
    available_models,
    check_model_name,
    create_model,
    register_family,
    register_model,
)

# Attributes imported on first use: name -> (module, attribute; None for the module itself).
_LAZY: dict[str, tuple[str, str | None]] = {
    "NotebookCNN": ("cxrnet.models.notebook_cnn", "NotebookCNN"),
    "count_trainable_parameters": ("cxrnet.models.adapt", "count_trainable_parameters"),
    **{
        name: (f"cxrnet.models.{name}", None)
        for name in ("convnext", "densenet", "efficientnet", "mobilenet", "resnet", "timm_nets")
    },
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    return module if attribute is None else getattr(module, attribute)


__all__ = [
    "ENTRY_POINT_GROUP",
    "NotebookCNN",
    "available_models",
    "check_model_name",
    "convnext",
    "count_trainable_parameters",
    "create_model",
    "densenet",
    "efficientnet",
    "mobilenet",
    "register_family",
    "register_model",
    "resnet",
    "timm_nets",
]
