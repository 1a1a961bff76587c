"""What a checkpoint needs to make decisions outside training: the network, the preprocessing
and the validation-chosen operating point, stored in it as plain values.

Plain ``str``/``float``/``int``/``dict`` only, so ``torch.load(weights_only=True)`` reads them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.registry import create_model

# The checkpoint key holding {"operating_point": {...}, "preprocessing": {...}, ...}.
INFERENCE_KEY = "cxrnet_inference"
PREPROCESSING_KEYS = ("image_size", "resize", "equalize", "interpolation")


def preprocessing_of(checkpoint: Mapping[str, Any]) -> DecodeParams:
    """The decoding the network was trained with: stored settings, else the data module's."""
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("preprocessing")
    if stored is None:
        hparams = checkpoint.get("datamodule_hyper_parameters") or {}
        stored = {key: hparams[key] for key in PREPROCESSING_KEYS if key in hparams}
    return DecodeParams(**stored)


def operating_point_of(checkpoint: Mapping[str, Any]) -> OperatingPoint | None:
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("operating_point")
    return None if stored is None else OperatingPoint.from_dict(stored)


def stamp_checkpoint(
    path: Path | str, operating_point: OperatingPoint, preprocessing: DecodeParams
) -> None:
    """Write the operating point and preprocessing into ``path``, replacing the file atomically."""
    path = Path(path)
    checkpoint = load_checkpoint(path)
    checkpoint[INFERENCE_KEY] = {
        "operating_point": operating_point.as_dict(),
        "preprocessing": preprocessing.as_dict(),
    }
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(checkpoint, partial)
    partial.replace(path)


@dataclass(frozen=True)
class InferenceModel:
    """A bare network with everything needed to call films: no Lightning, no data module."""

    net: nn.Module
    preprocessing: DecodeParams
    operating_point: OperatingPoint | None
    class_names: tuple[str, ...]
    net_config: dict[str, Any]

    @property
    def threshold(self) -> float:
        return 0.5 if self.operating_point is None else self.operating_point.threshold

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Pneumonia probability per (N, 1, S, S) image batch in [0, 1]."""
        return torch.sigmoid(self.net(images).squeeze(-1))


def inference_model(checkpoint: Mapping[str, Any]) -> InferenceModel:
    """The checkpoint's network in eval mode, with its preprocessing and operating point."""
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
    net = create_model(kwargs.pop("name"), num_outputs=1, **kwargs)
    state = {
        key.removeprefix("net."): value
        for key, value in checkpoint["state_dict"].items()
        if key.startswith("net.")
    }
    net.load_state_dict(state)
    net.eval()
    return InferenceModel(
        net, preprocessing_of(checkpoint), operating_point_of(checkpoint), class_names, net_config
    )
