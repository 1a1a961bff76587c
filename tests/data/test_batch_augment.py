"""The batched device augmentation: albumentations' geometry, seeded draws, the training switch."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import cv2
import lightning as L
import numpy as np
import pytest
import torch
from albumentations.augmentations.geometric import functional as albumentations_geometry
from helpers.console import QUICK, run_folder, run_train
from helpers.datamodule import make_dm

from cxrnet.data.batch_augment import (
    AffineParams,
    DeviceAugment,
    DeviceBatch,
    affine_theta,
    augment_batch,
    draw_params,
)
from cxrnet.data.dataset import SeededSample, SeededXRayDataset, XRayDataset
from cxrnet.data.transforms import AffineRecipe

SIZE = 64
SEED_RECIPE = {"rotate": 20.0, "zoom": 0.2, "shift": 0.1, "hflip": True}


def smooth_image(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    """Slow sinusoids: bilinear interpolation of it is close to the continuous image."""
    y, x = np.mgrid[0:height, 0:width]
    image = 127 + 60 * np.sin(x / 7.0) + 50 * np.cos(y / 9.0 + x / 13.0)
    return image.clip(0, 255).astype(np.uint8)


def params(angle, scale_x, scale_y, shift_x, shift_y, flip) -> AffineParams:
    values = (angle, scale_x, scale_y, shift_x, shift_y)
    return AffineParams(
        *(torch.tensor([v], dtype=torch.float64) for v in values), torch.tensor([flip])
    )


def warp_one(image: np.ndarray, p: AffineParams) -> np.ndarray:
    """The batched warp of one image, in grey levels."""
    batch = torch.from_numpy(image)[None, None]
    theta = affine_theta(p, *image.shape)
    return augment_batch(batch, theta)[0, 0].numpy() * 255


FIXED = [
    # angle, scale x, scale y, shift x, shift y, flip
    (15.0, 1.1, 0.9, 0.08, -0.05, False),
    (-20.0, 0.8, 1.2, -0.1, 0.1, True),
    (7.5, 1.0, 1.0, 0.0, 0.0, False),
    (0.0, 1.15, 1.15, 0.03, 0.0, True),
]


@pytest.mark.parametrize("fixed", FIXED)
def test_the_warp_matches_cv2_with_albumentations_matrix_and_replicated_borders(fixed) -> None:
    angle, scale_x, scale_y, shift_x, shift_y, flip = fixed
    image = smooth_image(SIZE, SIZE + 16)  # not square: the axes must not be swapped
    height, width = image.shape
    # The forward matrix the CPU path's A.Affine builds (shift truncated to whole pixels).
    matrix = albumentations_geometry.create_affine_transformation_matrix(
        {"x": int(shift_x * width), "y": int(shift_y * height)},
        {"x": 0.0, "y": 0.0},
        {"x": scale_x, "y": scale_y},
        angle,
        albumentations_geometry.center((height, width)),
    )
    expected = cv2.warpAffine(
        image, matrix[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float64)
    if flip:
        expected = expected[:, ::-1]
    difference = np.abs(warp_one(image, params(*fixed)) - expected)
    # cv2 rounds to uint8 (half a level) and quantises coordinates to 1/32 pixel; the borders,
    # where both repeat the edge, are held to the same bound as the interior.
    assert difference.max() <= 1.0, difference.max()
    assert difference[4:-4, 4:-4].mean() <= 0.35


@pytest.mark.parametrize("fixed", FIXED)
def test_the_warp_matches_the_cpu_paths_own_transform(fixed) -> None:
    angle, scale_x, scale_y, shift_x, shift_y, flip = fixed
    image = smooth_image()
    transforms: list[A.BasicTransform] = [
        A.Affine(
            rotate=(angle, angle),
            scale={"x": (scale_x, scale_x), "y": (scale_y, scale_y)},
            translate_percent={"x": (shift_x, shift_x), "y": (shift_y, shift_y)},
            border_mode=cv2.BORDER_REPLICATE,
            p=1.0,
        )
    ]
    if flip:
        transforms.append(A.HorizontalFlip(p=1.0))
    expected = A.Compose(transforms)(image=image)["image"].astype(np.float64)
    assert np.abs(warp_one(image, params(*fixed)) - expected).max() <= 1.0


def _batch(count: int = 8, seed: int = 0) -> torch.Tensor:
    generator = np.random.default_rng(seed)
    images = [np.roll(smooth_image(), generator.integers(SIZE), axis=1) for _ in range(count)]
    return torch.from_numpy(np.stack(images))[:, None]


def _augment(images: torch.Tensor, seeds, recipe: AffineRecipe) -> torch.Tensor:
    augment = DeviceAugment(recipe)
    labels = torch.zeros(len(images), dtype=torch.long)
    device_batch = augment.prepare(SeededSample(images, labels, torch.as_tensor(seeds)))
    out, out_labels = augment.finish(device_batch)
    assert torch.equal(out_labels, labels)
    return out


def test_zero_strength_is_exactly_the_cpu_paths_conversion() -> None:
    images = _batch()
    recipe = AffineRecipe.scaled(**(SEED_RECIPE | {"hflip": False}), strength=0)
    assert not recipe.has_affine and not recipe.hflip
    out = _augment(images, range(len(images)), recipe)
    assert out.dtype == torch.float32 and out.shape == images.shape
    cpu_path = XRayDataset(images[:, 0].numpy(), [0] * len(images))
    assert torch.equal(out, torch.stack([cpu_path[i][0] for i in range(len(images))]))


def test_zero_strength_with_flip_mirrors_exactly_without_resampling() -> None:
    images = _batch(16)
    out = _augment(images, range(16), AffineRecipe.scaled(**SEED_RECIPE, strength=0))
    plain, mirrored = images.float() / 255, images.flip(-1).float() / 255
    same = [torch.equal(o, p) for o, p in zip(out, plain, strict=True)]
    flipped = [torch.equal(o, m) for o, m in zip(out, mirrored, strict=True)]
    assert all(s or f for s, f in zip(same, flipped, strict=True))
    assert any(same) and any(flipped)


def test_each_image_depends_on_its_seed_alone() -> None:
    images = _batch(6)
    recipe = AffineRecipe.scaled(**SEED_RECIPE)
    seeds = [11, 12, 13, 14, 15, 16]
    first = _augment(images, seeds, recipe)
    assert torch.equal(first, _augment(images, seeds, recipe))
    # Another batch composition (a resumed epoch's batches, another DDP share) changes nothing.
    reordered = [4, 0, 5]
    assert torch.equal(
        _augment(images[reordered], [seeds[i] for i in reordered], recipe), first[reordered]
    )
    other = _augment(images, [s + 100 for s in seeds], recipe)
    assert all(not torch.equal(a, b) for a, b in zip(first, other, strict=True))
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


def test_drawn_parameters_stay_inside_the_scaled_ranges_and_use_them() -> None:
    recipe = AffineRecipe.scaled(rotate=20, zoom=0.2, shift=0.1, hflip=True, strength=0.5)
    drawn = draw_params(range(4000), recipe)
    limits = {"angle": 10.0, "scale_x": 0.1, "scale_y": 0.1, "shift_x": 0.05, "shift_y": 0.05}
    for name, limit in limits.items():
        values = getattr(drawn, name) - (1.0 if name.startswith("scale") else 0.0)
        assert float(values.abs().max()) <= limit, name
        assert float(values.min()) < -0.95 * limit and float(values.max()) > 0.95 * limit, name
    assert 0.45 < float(drawn.flip.double().mean()) < 0.55
    assert not bool(draw_params(range(100), AffineRecipe.scaled(hflip=False)).flip.any())
    # The axes and parameters are drawn independently (albumentations' keep_ratio=False).
    assert abs(float(torch.corrcoef(torch.stack([drawn.scale_x, drawn.scale_y]))[0, 1])) < 0.1


def test_a_non_uint8_batch_is_refused_with_what_was_given() -> None:
    expected = r"expected a uint8 batch \(N, C, H, W\), got torch.float32 \(2, 1, 8, 8\)"
    with pytest.raises(ValueError, match=expected):
        augment_batch(torch.zeros(2, 1, 8, 8), None)


@pytest.mark.parametrize("imbalance", ["class_weight", "sampler"])
def test_on_device_loader_sends_uint8_and_the_hooks_return_the_cpu_paths_batch_form(
    synthetic_root: Path, imbalance: str
) -> None:
    dm = make_dm(synthetic_root, imbalance=imbalance, augment=SEED_RECIPE | {"on_device": True})
    dm.setup("fit")
    assert dm.datasets["train"].transform is None  # the workers do not augment
    raw = next(iter(dm.train_dataloader()))
    assert isinstance(raw, SeededSample)
    assert raw.image.dtype == torch.uint8 and raw.image.shape == (8, 1, 32, 32)
    assert raw.seed.dtype == torch.int64
    prepared = dm.on_before_batch_transfer(raw, 0)
    assert isinstance(prepared, DeviceBatch) and prepared.theta.shape == (8, 2, 3)
    images, labels = dm.on_after_batch_transfer(prepared, 0)
    assert images.dtype == torch.float32 and images.shape == (8, 1, 32, 32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0
    assert torch.equal(labels, raw.label)
    # Validation batches, and the training split in evaluation, pass through as they were.
    val = next(iter(dm.val_dataloader()))
    assert dm.on_after_batch_transfer(dm.on_before_batch_transfer(val, 0), 0) is val
    plain = make_dm(synthetic_root, augment=SEED_RECIPE)
    plain.setup("fit")
    evaluated = zip(dm.eval_dataloader("train"), plain.eval_dataloader("train"), strict=True)
    assert all(torch.equal(ours[0], theirs[0]) for ours, theirs in evaluated)


def test_on_device_with_augmentation_off_trains_on_the_cpu_paths_images(
    synthetic_root: Path,
) -> None:
    off = {"rotate": 0, "zoom": 0, "shift": 0, "hflip": False}
    device = make_dm(synthetic_root, augment=off | {"on_device": True}, seed=3)
    cpu = make_dm(synthetic_root, augment=off, seed=3)
    for dm in (device, cpu):
        dm.setup("fit")
    batches = zip(device.train_dataloader(), cpu.train_dataloader(), strict=True)
    for raw, (images, labels) in batches:
        prepared = device.on_before_batch_transfer(raw, 0)
        ours, our_labels = device.on_after_batch_transfer(prepared, 0)
        assert torch.equal(ours, images) and torch.equal(our_labels, labels)


def test_a_bare_index_still_gets_a_seed_distinct_per_draw(synthetic_root: Path) -> None:
    # Under DDP Lightning's sampler yields indices without seeds.
    dm = make_dm(synthetic_root, augment={"on_device": True})
    dm.setup("fit")
    dataset = SeededXRayDataset(dm.datasets["train"])
    torch.manual_seed(0)
    seeds = [dataset[0].seed for _ in range(5)]
    assert len(set(seeds)) == 5
    # Governed by the run's seed (seed_everything), like the CPU path's albumentations stream.
    torch.manual_seed(0)
    again = SeededXRayDataset(dm.datasets["train"])
    assert [again[0].seed for _ in range(5)] == seeds
    torch.manual_seed(1)
    assert SeededXRayDataset(dm.datasets["train"])[0].seed != seeds[0]
    # The sampler's seed, when given, is the one used.
    assert dataset[(3, 77)].seed == 77


def _completed(done, tmp_path: Path) -> dict:
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads((run_folder(done.stdout) / "metrics.json").read_text())


@pytest.mark.slow
def test_cxrnet_train_with_on_device_augmentation_runs_to_completion(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train(
        [
            *QUICK,
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "data.augment.on_device=true",
            "data.augment.hflip=true",
            "trainer.max_epochs=2",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    record = _completed(done, tmp_path)
    assert record["status"] == "completed"
    assert "data.augment.on_device=true" in record["overrides"]
    assert np.isfinite(record["metrics"]["val/auroc"])


@pytest.mark.slow
def test_on_device_augmentation_under_ddp_cpu(synthetic_root: Path, tmp_path: Path) -> None:
    done = run_train(
        [
            *QUICK,
            "trainer=ddp_cpu",
            "trainer.devices=2",
            f"data.root={synthetic_root}",
            "data.batch_size=8",
            "data.augment.on_device=true",
            "trainer.max_epochs=2",
            "test=false",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    record = _completed(done, tmp_path)
    assert record["status"] == "completed"
    assert record["extra"]["world_size"] == 2


def test_the_augmented_batch_gets_the_true_precision_cast_the_cpu_path_gets(
    synthetic_root: Path,
) -> None:
    # Lightning casts float inputs for "bf16-true" before the transfer; the uint8 batch was not
    # float then, so the hook casts what it returns.
    dm = make_dm(synthetic_root, augment=SEED_RECIPE | {"on_device": True})
    dm.setup("fit")
    dm.trainer = L.Trainer(precision="bf16-true", accelerator="cpu", logger=False)
    raw = next(iter(dm.train_dataloader()))
    images, _ = dm.on_after_batch_transfer(dm.on_before_batch_transfer(raw, 0), 0)
    assert images.dtype == torch.bfloat16
