"""A checkpoint's network ready to call films outside training: no Lightning, no data module.

The preprocessing and the operating point come from the checkpoint's stamp
(``cxrnet.models.checkpoint.stamp_checkpoint``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD, network_probabilities
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.models.checkpoint import (
    check_network_of,
    finding_points_of,
    load_checkpoint,
    operating_point_of,
    preprocessing_of,
)
from cxrnet.models.registry import check_stored_network, create_model
from cxrnet.user_errors import CheckpointError


@dataclass(frozen=True)
class Findings:
    """A findings model's findings in output order, and each one's operating point."""

    names: tuple[str, ...] = ()
    points: Mapping[str, OperatingPoint] = field(default_factory=dict)

    def threshold(self, name: str) -> float:
        """The finding's stored threshold; 0.5 where none is stored."""
        point = self.points.get(name)
        return DEFAULT_THRESHOLD if point is None else point.threshold


@dataclass(frozen=True)
class InferenceModel:
    """A bare network with everything needed to call films: no Lightning, no data module."""

    net: nn.Module
    preprocessing: DecodeParams
    operating_point: OperatingPoint | None
    class_names: tuple[str, ...]
    net_config: dict[str, Any]
    # A findings model (data.task=findings): its findings in output order, and the operating
    # point of each (``operating_point`` is the triage finding's).
    findings: tuple[str, ...] = ()
    finding_points: dict[str, OperatingPoint] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return DEFAULT_THRESHOLD if self.operating_point is None else self.operating_point.threshold

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Pneumonia probability per (N, 1, S, S) image batch in [0, 1]; (N, F), one per
        finding, for a findings model."""
        return network_probabilities(self.net(images), self.findings)


def load_inference_model(path: Path | str, network: str | None = None) -> InferenceModel:
    """The checkpoint at ``path`` as an ``InferenceModel``; a stored value that cannot be used
    (a threshold outside [0, 1], unknown preprocessing, a network it would have to import) is a
    ``CheckpointError`` naming it. ``network``: the ``model.net.name`` the user passed."""
    checkpoint = load_checkpoint(path)
    check_network_of(checkpoint, path, network)
    hparams = checkpoint.get("hyper_parameters") or {}
    class_names = hparams.get("class_names", ("NORMAL", "PNEUMONIA"))
    if len(class_names) != 2:
        raise CheckpointError(
            f"checkpoint {path} is a {len(class_names)}-class model ({', '.join(class_names)}); "
            "cxrnet-predict and cxrnet-export need a binary (normal/pneumonia) checkpoint: use "
            "one trained with data.task=binary (the default), or score this one on a labelled "
            f"set with cxrnet-eval ckpt_path={path}"
        )
    try:
        return inference_model(checkpoint, network)
    except (ValueError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint {path}: {error}; use a checkpoint cxrnet-train wrote and stamped, or "
            "re-run cxrnet-eval with threshold.rechoose=true to choose its threshold again"
        ) from error


def inference_model(checkpoint: Mapping[str, Any], network: str | None = None) -> InferenceModel:
    """The checkpoint's network in eval mode, with its preprocessing and operating point.

    A stored import path is imported only when it is ``network``, the name the user gave
    (``cxrnet.models.registry.check_stored_network``)."""
    hparams = checkpoint["hyper_parameters"]
    class_names = tuple(hparams.get("class_names", ("NORMAL", "PNEUMONIA")))
    if len(class_names) != 2:
        raise ValueError(
            f"prediction and export need a binary (normal/pneumonia) checkpoint; this one has "
            f"classes {list(class_names)}"
        )
    net_config = dict(hparams["net"])
    kwargs = dict(net_config)
    # Keys the LightningModule reads, not the network (as in ClassifierModule.__init__); the
    # trained weights come from the state dict below, never from a weights file.
    for key in ("weights", "initial_weights", "freeze_backbone_epochs"):
        kwargs.pop(key, None)
    name = str(kwargs.pop("name"))
    check_stored_network(name, network)
    findings = tuple(str(name) for name in hparams.get("findings") or ())
    net = create_model(name, num_outputs=len(findings) or 1, **kwargs)
    state = {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    net.load_state_dict(state)
    net.eval()
    return InferenceModel(
        net,
        preprocessing_of(checkpoint),
        operating_point_of(checkpoint),
        class_names,
        net_config,
        findings,
        finding_points_of(checkpoint) or {},
    )
