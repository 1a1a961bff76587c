"""A small binary checkpoint stamped as cxrnet-train stamps its best one (operating point,
preprocessing, validation result), without training: for tests of what reads checkpoints,
where the numbers checked derive from the predictions the run itself writes out."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from cxrnet.models.checkpoint import INFERENCE_KEY
from cxrnet.models.module import ClassifierModule


def stamped_checkpoint(
    path: Path,
    threshold: float,
    validation: Mapping[str, float],
    image_size: int = 32,
    seed: int = 0,
) -> Path:
    torch.manual_seed(seed)
    net = {"name": "notebook_cnn", "image_size": image_size, "widths": [4, 4, 8, 8], "hidden": 8}
    module = ClassifierModule(net=net, optimizer={"_target_": "torch.optim.Adam"})
    point = {"threshold": threshold, "criterion": "youden", "floor": None, "chosen_on": "val"}
    preprocessing = {
        "image_size": image_size,
        "resize": "squash",
        "equalize": "none",
        "interpolation": "area",
    }
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": dict(module.hparams),
            INFERENCE_KEY: {
                "operating_point": point,
                "preprocessing": preprocessing,
                "validation": dict(validation),
            },
        },
        path,
    )
    return path
