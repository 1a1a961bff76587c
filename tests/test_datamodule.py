from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import WeightedRandomSampler

from cxrnet.data.datamodule import ChestXRayDataModule, balanced_class_weights
from cxrnet.data.errors import DataError


def make_dm(root: Path, **kwargs) -> ChestXRayDataModule:
    defaults = {"image_size": 32, "batch_size": 8, "num_workers": 0, "cache_dir": None}
    return ChestXRayDataModule(root=root, **(defaults | kwargs))


def files_in(root: Path, split: str, cls: str) -> int:
    return len(list((root / split / cls).glob("*.jpeg")))


def test_discovers_every_file_with_counts_per_split_and_class(synthetic_root: Path, tmp_path):
    dm = make_dm(synthetic_root, report_dir=tmp_path / "run")
    dm.setup("fit")
    counts = {row["split"]: row for row in dm.counts()}
    for split in ("train", "val", "test"):
        for cls in ("NORMAL", "PNEUMONIA"):
            assert counts[split][cls] == files_in(synthetic_root, split, cls)
    assert (tmp_path / "run" / "counts.csv").is_file()
    split_rows = (tmp_path / "run" / "split.csv").read_text().splitlines()
    assert len(split_rows) == 1 + sum(len(r) for r in dm.split_records.values())


def test_batches_are_single_channel_in_unit_range(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root)
    dm.setup("fit")
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape[1:] == (1, 32, 32)
    assert images.dtype == torch.float32
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert set(labels.tolist()) <= {0, 1}


def test_balanced_class_weights_match_sklearn_formula() -> None:
    labels = np.array([0] * 1341 + [1] * 3875)  # the real training split
    normal, pneumonia = balanced_class_weights(labels, 2)
    assert round(normal, 2) == 1.94 and round(pneumonia, 2) == 0.67


def test_class_weights_only_for_class_weight_imbalance(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, imbalance="class_weight")
    dm.setup("fit")
    labels = dm.datasets["train"].labels.numpy()
    n_normal, n_pneu = np.bincount(labels)
    assert dm.class_weights == pytest.approx(
        [len(labels) / (2 * n_normal), len(labels) / (2 * n_pneu)]
    )
    assert dm.class_weights[0] > 1 > dm.class_weights[1]
    none = make_dm(synthetic_root, imbalance="none")
    none.setup("fit")
    assert none.class_weights is None


def test_sampler_balances_the_classes_drawn(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, imbalance="sampler", batch_size=16)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler)
    assert dm.class_weights is None  # no double correction
    torch.manual_seed(0)
    drawn = Counter(int(y) for _ in range(20) for _, labels in loader for y in labels)
    share = drawn[0] / (drawn[0] + drawn[1])
    assert 0.4 < share < 0.6  # ~25% normal without the sampler


def test_training_is_augmented_and_shuffled_evaluation_is_not(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, augment={"rotate": 20, "zoom": 0.2, "shift": 0.1})
    dm.setup("fit")
    train, val = dm.datasets["train"], dm.datasets["val"]
    assert train.transform is not None and val.transform is None
    assert not torch.equal(train[0][0], train[0][0])  # a new draw each time
    assert torch.equal(val[0][0], val[0][0])
    first = [y for _, ys in dm.val_dataloader() for y in ys.tolist()]
    assert first == [y for _, ys in dm.val_dataloader() for y in ys.tolist()]


def test_augmentation_off_leaves_training_images_as_decoded(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, augment={"rotate": 0, "zoom": 0, "shift": 0, "hflip": False})
    dm.setup("fit")
    assert dm.datasets["train"].transform is None


def test_missing_test_folder_only_skips_testing(synthetic_copy: Path, caplog) -> None:
    shutil.rmtree(synthetic_copy / "test")
    dm = make_dm(synthetic_copy)
    dm.setup("fit")
    assert not dm.has_test
    assert "no test folder" in caplog.text


def test_missing_train_folder_names_the_root(synthetic_copy: Path) -> None:
    shutil.rmtree(synthetic_copy / "train")
    with pytest.raises(DataError, match=f"no train/ folder found in {synthetic_copy}"):
        make_dm(synthetic_copy).setup("fit")


def test_missing_val_folder_names_the_path(synthetic_copy: Path) -> None:
    shutil.rmtree(synthetic_copy / "val")
    with pytest.raises(DataError, match=r"split=official needs a val folder.*data\.split="):
        make_dm(synthetic_copy).setup("fit")


def test_empty_class_folder_names_the_folder(synthetic_copy: Path) -> None:
    folder = synthetic_copy / "val" / "NORMAL"
    for path in folder.iterdir():
        path.unlink()
    with pytest.raises(DataError, match=rf"{folder}.*no images"):
        make_dm(synthetic_copy).setup("fit")


def test_root_without_images_says_what_was_expected(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no images.*expected root/\{train,val,test\}"):
        make_dm(tmp_path / "empty").setup("fit")


def test_missing_root_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*data\.root"):
        make_dm(tmp_path / "nowhere").setup("fit")


def test_subtype_task_has_three_classes(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, task="subtype")
    dm.setup("fit")
    assert dm.num_classes == 3
    assert set(dm.datasets["train"].labels.tolist()) == {0, 1, 2}
    assert len(dm.class_weights) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"imbalance": "oversample"}, "imbalance must be"),
        ({"task": "triage"}, "task must be"),
        ({"batch_size": 0}, "batch_size must be"),
    ],
)
def test_bad_settings_are_rejected_up_front(tmp_path: Path, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_dm(tmp_path, **kwargs)
