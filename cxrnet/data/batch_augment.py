"""The training augmentation applied to a whole batch on the model's device.

The CPU path (``build_train_transform``) warps each image with albumentations on a loader
worker, about 4,000 images per second per core: a GPU that trains the seed CNN at 10,000+ images
per second would wait for it. Here a loader worker only indexes the uint8 cache; the batch
crosses to the device as uint8 (a quarter of float32's bytes) and one ``F.affine_grid`` +
``F.grid_sample`` call warps all of it there.

The geometry is albumentations' ``Affine`` (rotation and per-axis scale about the image centre,
a shift truncated to whole pixels, then the optional mirror), with the edge pixels repeated
beyond the border (``padding_mode="border"``, like ``cv2.BORDER_REPLICATE``) and bilinear
sampling, so ``data.augment.*`` means the same on either path. The output is not rounded to
uint8 levels as the CPU path's is: the values differ by under one grey level. The intensity
changes (contrast, brightness, gamma: ``AffineRecipe``) follow on the warped batch in [0, 1], in
the CPU path's order and clipped as it clips; its lookup tables truncate each step to a whole
level, which lowers its output by half a level on average, a difference this path does not copy.

Each image's parameters come from its own seed (``cxrnet.data.sampling.EpochSampler`` hands one
to every draw), drawn on the CPU before the transfer: the same seed gives the same warp on any
device and in any batch, which keeps a resumed run exact. kornia's ``RandomAffine`` does the
same warp, but it would be a dependency for two torch calls, and it draws parameters from the
global generator per batch, which a mid-epoch resume could not reproduce.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from cxrnet.data.dataset import SeededSample
from cxrnet.data.transforms import AffineRecipe

# Uniform draws per image: angle, scale x, scale y, shift x, shift y, flip.
_DRAWS = 6
# Then, from the same generator after those (so the geometry a seed drew before the intensity
# settings existed is unchanged): contrast, brightness, gamma.
_INTENSITY_DRAWS = 3


class AffineParams(NamedTuple):
    """Per-image parameters, (N,) each: degrees, scale factors, shifts as fractions, mirror."""

    angle: Tensor
    scale_x: Tensor
    scale_y: Tensor
    shift_x: Tensor
    shift_y: Tensor
    flip: Tensor


class IntensityParams(NamedTuple):
    """Per-image grey-level changes, (N,) each: x·contrast + brightness (x in [0, 1]), then
    x**gamma; 1, 0 and 1 where the recipe leaves them off."""

    contrast: Tensor
    brightness: Tensor
    gamma: Tensor


class DeviceBatch(NamedTuple):
    """A training batch between the hooks: uint8 images, labels, and how to warp each image.

    ``theta`` (N, 2, 3) maps output to input coordinates (``F.affine_grid``); None when the
    recipe has no rotation, zoom or shift, and only ``flip`` applies (exactly, no resampling).
    ``intensity``: the grey-level changes after the warp; None when the recipe has none.
    """

    images: Tensor
    labels: Tensor
    theta: Tensor | None
    flip: Tensor
    intensity: IntensityParams | None = None


def uniform_draws(seeds: Sequence[int] | Tensor) -> Tensor:
    """(N, 9) float64 uniform [0, 1) draws, each row from its seed alone.

    One small generator per seed (a few microseconds each on the CPU): the draw then does not
    depend on the batch an image lands in, its position there, or the device.
    """
    seeds = torch.as_tensor(seeds, dtype=torch.int64).reshape(-1).tolist()
    generator = torch.Generator()
    uniform = torch.empty(len(seeds), _DRAWS + _INTENSITY_DRAWS, dtype=torch.float64)
    for row, seed in enumerate(seeds):
        generator.manual_seed(seed)
        uniform[row, :_DRAWS] = torch.rand(_DRAWS, generator=generator, dtype=torch.float64)
        uniform[row, _DRAWS:] = torch.rand(
            _INTENSITY_DRAWS, generator=generator, dtype=torch.float64
        )
    return uniform


def draw_params(seeds: Sequence[int] | Tensor, recipe: AffineRecipe) -> AffineParams:
    """Each image's geometry from its seed alone, uniform within ``recipe``'s ranges."""
    return _affine_params(uniform_draws(seeds), recipe)


def draw_intensity(seeds: Sequence[int] | Tensor, recipe: AffineRecipe) -> IntensityParams:
    """Each image's grey-level changes from its seed alone, uniform within ``recipe``'s ranges:
    factors 1 + U(-contrast, contrast) and 1 + U(-gamma, gamma), a shift U(-brightness,
    brightness) of the full range, as albumentations draws them on the CPU path."""
    return _intensity_params(uniform_draws(seeds), recipe)


def _intensity_params(uniform: Tensor, recipe: AffineRecipe) -> IntensityParams:
    symmetric = uniform[:, _DRAWS:] * 2 - 1  # [-1, 1)
    return IntensityParams(
        contrast=1 + symmetric[:, 0] * recipe.contrast,
        brightness=symmetric[:, 1] * recipe.brightness,
        gamma=1 + symmetric[:, 2] * recipe.gamma,
    )


def _affine_params(uniform: Tensor, recipe: AffineRecipe) -> AffineParams:
    symmetric = uniform[:, :5] * 2 - 1  # [-1, 1)
    return AffineParams(
        angle=symmetric[:, 0] * recipe.rotate,
        scale_x=1 + symmetric[:, 1] * recipe.zoom,
        scale_y=1 + symmetric[:, 2] * recipe.zoom,
        shift_x=symmetric[:, 3] * recipe.shift,
        shift_y=symmetric[:, 4] * recipe.shift,
        flip=(uniform[:, 5] < 0.5) & recipe.hflip,
    )


def affine_theta(params: AffineParams, height: int, width: int) -> Tensor:
    """``F.affine_grid`` matrices (N, 2, 3, float32) for albumentations' geometry.

    albumentations maps a source pixel p (centre-relative, y down) to R S p + t, with
    R = [[cos, sin], [-sin, cos]], S = diag(scale_x, scale_y) and t the shift in whole pixels
    (``int(fraction * size)``, truncated towards zero), then mirrors. ``affine_grid`` wants the
    inverse, output to input, in coordinates normalised to [-1, 1]: with ``align_corners=False``
    those are the centre-relative pixel coordinates divided by half the size (D), so the
    matrix is D⁻¹ (R S)⁻¹ (M D q - t) for output point q and mirror M.
    """
    radians = params.angle.double() * (math.pi / 180)
    cos, sin = torch.cos(radians), torch.sin(radians)
    sx, sy = params.scale_x.double(), params.scale_y.double()
    tx = torch.trunc(params.shift_x.double() * width)
    ty = torch.trunc(params.shift_y.double() * height)
    # (R S)^-1 = S^-1 R^T
    a, b, c, d = cos / sx, -sin / sx, sin / sy, cos / sy
    half_w, half_h = width / 2, height / 2
    mirror = torch.where(params.flip, -1.0, 1.0).double()
    theta = torch.stack(
        [
            torch.stack([a * mirror, b * half_h / half_w, -(a * tx + b * ty) / half_w], dim=1),
            torch.stack([c * half_w / half_h * mirror, d, -(c * tx + d * ty) / half_h], dim=1),
        ],
        dim=1,
    )
    return theta.float()


def augment_batch(images: Tensor, theta: Tensor | None, flip: Tensor | None = None) -> Tensor:
    """uint8 (N, 1, H, W) on any device to float32 in [0, 1], warped by ``theta``.

    Without ``theta`` only ``flip`` (N,) bool mirrors, exactly; with neither this is the CPU
    path's conversion, ``x.float() / 255``.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(
            f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )
    batch = images.float()
    if theta is not None:
        grid = F.affine_grid(
            theta.to(batch.device, batch.dtype), list(batch.shape), align_corners=False
        )
        batch = F.grid_sample(
            batch, grid, mode="bilinear", padding_mode="border", align_corners=False
        )
    elif flip is not None:
        flip = flip.to(batch.device).view(-1, 1, 1, 1)
        batch = torch.where(flip, batch.flip(-1), batch)
    return batch.div_(255.0)


def adjust_intensity(
    batch: Tensor, params: IntensityParams, linear: bool = True, gamma: bool = True
) -> Tensor:
    """Float (N, C, H, W) in [0, 1], in place: x·contrast + brightness clipped to [0, 1], then
    x**gamma, per image; ``linear`` or ``gamma`` false skips that step (off, not drawn as 1)."""
    shape = (-1,) + (1,) * (batch.ndim - 1)

    def per_image(values: Tensor) -> Tensor:
        return values.to(batch.device, batch.dtype).view(shape)

    if linear:
        batch.mul_(per_image(params.contrast)).add_(per_image(params.brightness)).clamp_(0, 1)
    if gamma:
        batch.pow_(per_image(params.gamma))
    return batch


class DeviceAugment:
    """The two halves of the device path, for a data module's batch-transfer hooks.

    ``prepare`` runs on the CPU before the transfer (parameters from the seeds: a few hundred
    floats travel with the batch, and nothing waits on the device); ``finish`` runs after it,
    on the device, in one batched call.
    """

    def __init__(self, recipe: AffineRecipe) -> None:
        self.recipe = recipe

    def prepare(self, batch: SeededSample) -> DeviceBatch:
        uniform = uniform_draws(batch.seed)
        params = _affine_params(uniform, self.recipe)
        height, width = batch.image.shape[-2:]
        theta = affine_theta(params, height, width) if self.recipe.has_affine else None
        intensity = None
        if self.recipe.has_intensity:
            drawn = _intensity_params(uniform, self.recipe)
            intensity = IntensityParams(*(values.float() for values in drawn))
        return DeviceBatch(batch.image, batch.label, theta, params.flip, intensity)

    def before_transfer(self, batch: object) -> object:
        """A data module's ``on_before_batch_transfer``: a training batch's parameters drawn;
        any other batch as it is."""
        return self.prepare(batch) if isinstance(batch, SeededSample) else batch

    def after_transfer(self, batch: object, convert: Callable[[Tensor], Tensor]) -> object:
        """A data module's ``on_after_batch_transfer``: a training batch warped and scaled to
        [0, 1] on the device, then ``convert``ed (the precision plugin's cast of float inputs,
        which these images were not yet when it ran); evaluation batches (already float, never
        augmented) pass unchanged."""
        if not isinstance(batch, DeviceBatch):
            return batch
        images, labels = self.finish(batch)
        return convert(images), labels

    def finish(self, batch: DeviceBatch) -> tuple[Tensor, Tensor]:
        with torch.no_grad():  # not inference_mode: the network trains on the result
            images = augment_batch(batch.images, batch.theta, batch.flip)
            if batch.intensity is not None:
                images = adjust_intensity(
                    images,
                    batch.intensity,
                    linear=self.recipe.has_linear_intensity,
                    gamma=bool(self.recipe.gamma),
                )
        return images, batch.labels
