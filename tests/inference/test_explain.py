"""Grad-CAM heatmaps: on films where the opacity's place is known, the peak falls inside it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrnet.models.notebook_cnn import NotebookCNN

pytest.importorskip("captum", reason="the explain extra (captum) is not installed")

from cxrnet.inference.gradcam import gradcam, last_conv_layer, save_overlay

SIZE = 48


def _films(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Noisy grey films; a pneumonia film has one bright round opacity at a random place.

    The project's synthetic generator does not expose its opacity masks, so these films are
    drawn here where the mask is known exactly.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(0.4, 0.08, (n, 1, SIZE, SIZE)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    masks = np.zeros((n, SIZE, SIZE), dtype=bool)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in np.flatnonzero(labels):
        cx, cy = rng.uniform(10, SIZE - 10, 2)
        r = rng.uniform(4, 6)
        masks[i] = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        images[i, 0][masks[i]] += 0.35
    return torch.from_numpy(np.clip(images, 0, 1)), torch.from_numpy(labels).float(), masks


@pytest.mark.slow
def test_heatmap_peaks_inside_the_opacity_far_more_often_than_chance(tmp_path) -> None:
    torch.manual_seed(0)
    images, labels, _ = _films(256, seed=0)
    net = NotebookCNN(image_size=SIZE, widths=(8, 8, 16, 16), hidden=32, dropout=0.0)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    for _ in range(4):
        for batch in torch.randperm(len(images)).split(32):
            logits = net(images[batch]).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    # Four quick epochs leave BatchNorm's running averages behind the weights; one pass of
    # exact averages over the training films makes the eval-mode network the trained one.
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():
        for batch in torch.arange(len(images)).split(64):
            net(images[batch])
    net.eval()
    test_images, test_labels, masks = _films(120, seed=1)
    with torch.no_grad():
        called = torch.sigmoid(net(test_images).squeeze(-1)) >= 0.5
    assert (called == test_labels.bool()).float().mean() >= 0.9, "the network found the opacity"
    positive = test_labels.bool().numpy()
    maps = gradcam(net, test_images[positive])
    assert maps.shape == (positive.sum(), SIZE, SIZE)
    peaks_values = maps.reshape(len(maps), -1).max(axis=1)
    # Scaled to a peak of 1; a film with no positive evidence anywhere stays all zero.
    assert maps.min() >= 0 and np.all(np.isclose(peaks_values, 1) | (peaks_values == 0))
    peaks = [np.unravel_index(np.argmax(m), m.shape) for m in maps]
    inside = np.mean([masks[positive][i][peak] for i, peak in enumerate(peaks)])
    chance = masks[positive].mean()  # a peak placed at random lands inside this often
    assert chance < 0.05
    assert inside >= 0.5, f"peak inside the opacity for {inside:.0%} (chance {chance:.0%})"

    image = (test_images[positive][0, 0].numpy() * 255).astype(np.uint8)
    path = save_overlay(image, maps[0], tmp_path / "cam.png", caption="p=0.9")
    assert path.stat().st_size > 1000


def test_the_layer_is_the_deepest_convolution_still_wide_enough() -> None:
    net = NotebookCNN(image_size=150)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert last_conv_layer(net, 150) is convs[-1], "19x19 at 150 px: the last block"
    small = NotebookCNN(image_size=48)
    small_convs = [m for m in small.modules() if isinstance(m, torch.nn.Conv2d)]
    # 48 px: the last block sees 6x6, too coarse; the third block's convolution sees 12x12.
    assert last_conv_layer(small, 48) is small_convs[3]
