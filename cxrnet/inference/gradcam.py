"""Class-activation heatmaps (Grad-CAM, via captum) from the last convolution of any network,
overlaid on the film and saved as PNGs.

captum's ``LayerGradCam`` rather than hand-written hooks: it is maintained with PyTorch and
handles hook cleanup, batching and upsampling. The layer is found, not named, so any registered
network works: the last ``nn.Conv2d`` whose output is still at least ``MIN_SIDE`` cells wide.
A heatmap is only as sharp as its layer: at 150 px the seed CNN's last block is 19x19 and is
used, but at 32-64 px it is 2-6 cells, which cannot place an opacity, so the block before it is.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

MIN_SIDE = 8


def last_conv_layer(net: nn.Module, image_size: int, min_side: int = MIN_SIDE) -> nn.Conv2d:
    """The deepest ``Conv2d`` whose output is at least ``min_side`` cells on its short side for
    ``image_size`` inputs (the first one if none is)."""
    convs = [module for module in net.modules() if isinstance(module, nn.Conv2d)]
    if not convs:
        raise ValueError(f"{type(net).__name__} has no Conv2d layer to explain from")
    sides: dict[nn.Module, int] = {}
    hooks = [
        conv.register_forward_hook(
            lambda module, _, out: sides.__setitem__(module, min(out.shape[-2:]))
        )
        for conv in convs
    ]
    try:
        was_training = net.training
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 1, image_size, image_size))
        net.train(was_training)
    finally:
        for hook in hooks:
            hook.remove()
    wide = [conv for conv in convs if sides.get(conv, 0) >= min_side]
    return wide[-1] if wide else convs[0]


class _OneLogit(nn.Module):
    """One output per film, so Grad-CAM explains one logit whatever the head's shape: the last
    (pneumonia's in a binary or subtype model) unless ``output`` names another."""

    def __init__(self, net: nn.Module, output: int | None = None) -> None:
        super().__init__()
        self.net = net
        self.output = -1 if output is None else output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.net(images).reshape(images.shape[0], -1)
        return logits[:, self.output].unsqueeze(1)


def gradcam(
    net: nn.Module,
    images: torch.Tensor,
    layer: nn.Module | None = None,
    output: int | None = None,
) -> np.ndarray:
    """(N, H, W) heatmaps in [0, 1], upsampled to the input size; where the evidence for
    pneumonia is (Grad-CAM keeps positive contributions only). ``output``: which of the
    network's outputs to explain (a findings model's finding); None: the last, pneumonia's in a
    binary or subtype model."""
    try:
        from captum.attr import LayerAttribution, LayerGradCam
    except ImportError as error:
        raise ImportError("heatmaps need captum: pip install 'cxrnet[explain]'") from error
    was_training = net.training
    net.eval()
    try:
        model = _OneLogit(net, output)
        cam = LayerGradCam(model, layer or last_conv_layer(net, images.shape[-1]))
        images = images.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            maps = cam.attribute(images, target=0, relu_attributions=True)
        maps = LayerAttribution.interpolate(maps, tuple(images.shape[-2:]), "bilinear")
    finally:
        net.train(was_training)
    maps = maps.detach()[:, 0].clamp_min(0)
    peak = maps.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]
    return (maps / peak).cpu().numpy()


def overlay(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """A uint8 grey film with a jet-coloured heatmap blended over it, as BGR for ``cv2``."""
    grey = cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
    colour = cv2.applyColorMap(np.uint8(np.clip(heatmap, 0, 1) * 255), cv2.COLORMAP_JET)
    return cv2.addWeighted(colour, alpha, grey, 1 - alpha, 0)


def save_overlay(
    image: np.ndarray, heatmap: np.ndarray, path: Path, caption: str = "", scale: int | None = None
) -> Path:
    """Write the overlay beside the plain film, with a caption; small films (64 px) are
    enlarged to about 256 px so that a person can see the detail."""
    scale = scale or max(1, round(256 / max(image.shape)))
    blended = overlay(image, heatmap)
    plain = cv2.cvtColor(np.asarray(image, dtype=np.uint8), cv2.COLOR_GRAY2BGR)
    panel = np.concatenate([plain, blended], axis=1)
    panel = cv2.resize(panel, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if caption:
        bar = np.full((24, panel.shape[1], 3), 255, np.uint8)
        cv2.putText(bar, caption, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        panel = np.concatenate([bar, panel], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), panel):
        raise OSError(f"could not write {path}")
    return path
