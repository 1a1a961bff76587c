"""Local pretrained weights for any network: ``model.net.weights=<file>``, never a download.

The file may be a plain state dict (``torch.save(net.state_dict(), f)``, as torchvision and timm
publish them) or a Lightning checkpoint of this project. An RGB stem is adapted to one channel by
summing its kernels (see ``adapt``); a head of another size (ImageNet's 1000 classes) is left at
its fresh initialisation. Everything else must match: a partly loaded backbone trains without
complaint and quietly wastes the run, so a missing or misshapen tensor is an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from cxrnet.models.adapt import classifier_name, stem_conv_name, sum_rgb_kernels

log = logging.getLogger(__name__)

# Wrappers that prefix every key: this project's LightningModule, DDP, and common training code.
_PREFIXES = ("", "net.", "module.", "model.")


@dataclass(frozen=True)
class WeightsReport:
    """What loading a weights file did, key by key."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    adapted_stem: list[str] = field(default_factory=list)
    replaced_head: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors by name from ``path``; only tensors and plain containers are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.net.weights={path}: no such file; pass the path of a saved state dict "
            "(torch.save(model.state_dict(), path)) or of a cxrnet checkpoint"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"model.net.weights={path}: not a readable PyTorch weights file ({error}); save one "
            "with torch.save(model.state_dict(), path)"
        ) from error
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(
            f"model.net.weights={path}: expected a mapping of parameter names to tensors "
            f"(a state dict), got {type(obj).__name__}"
        )
    return dict(obj)


def _strip_prefix(state: dict[str, Tensor], expected: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict with the wrapper prefix removed under which most keys match ``expected``."""

    def matches(prefix: str) -> int:
        return sum(k[len(prefix) :] in expected for k in state if k.startswith(prefix))

    best = max(_PREFIXES, key=matches)
    return {k[len(best) :]: v for k, v in state.items() if k.startswith(best)}


def load_weights(model: nn.Module, path: str | Path) -> WeightsReport:
    """Load ``path`` into ``model`` in place, adapting the stem and skipping a resized head."""
    path = Path(path)
    target = model.state_dict()
    state = _strip_prefix(read_state_dict(path), target)
    stem = f"{stem_conv_name(model)}.weight"
    head = classifier_name(model)
    head_keys = {f"{head}.weight", f"{head}.bias"}
    report = WeightsReport(path)
    to_load: dict[str, Tensor] = {}
    mismatched: list[str] = []
    for key, tensor in state.items():
        if key not in target:
            report.unexpected.append(key)
        elif tensor.shape == target[key].shape:
            to_load[key] = tensor
            report.loaded.append(key)
        elif key == stem and tensor.shape[1:2] == (3,) and target[key].shape[1:2] == (1,):
            to_load[key] = sum_rgb_kernels(tensor)
            report.adapted_stem.append(key)
        elif key in head_keys:
            report.replaced_head.append(key)
        else:
            shapes = f"file {tuple(tensor.shape)}, network {tuple(target[key].shape)}"
            mismatched.append(f"{key}: {shapes}")
    report.missing.extend(k for k in target if k not in state and k not in head_keys)
    if mismatched or report.missing:
        problems = [*mismatched, *(f"{k}: not in the file" for k in report.missing)]
        raise ValueError(
            f"model.net.weights={path} does not fit {type(model).__name__} "
            f"({len(problems)} problems, first: {'; '.join(problems[:5])}); the file is for "
            "another network or width: check model.net.name and its arguments"
        )
    model.load_state_dict(to_load, strict=False)
    log.info(
        "loaded %d tensors from %s; stem adapted to one channel: %s; head left fresh: %s",
        len(report.loaded) + len(report.adapted_stem),
        path,
        report.adapted_stem or "no",
        report.replaced_head or "no",
    )
    if report.unexpected:
        log.warning(
            "%s: %d tensors the network does not have were ignored: %s",
            path,
            len(report.unexpected),
            report.unexpected[:10],
        )
    return report
