from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.datamodule import make_dm

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.loaders import balanced_class_weights
from cxrnet.data.sampling import EpochSampler
from cxrnet.user_errors import DataError


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
    assert images.min() >= 0.0 and images.max() <= 1.0
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
    assert isinstance(loader.sampler, EpochSampler) and loader.sampler.weights is not None
    assert dm.class_weights is None  # no double correction
    drawn: Counter[int] = Counter()
    for epoch in range(20):
        loader.sampler.set_epoch(epoch)  # as Lightning does before each epoch
        drawn.update(int(y) for _, labels in loader for y in labels)
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
    with pytest.raises(DataError, match=r"^data\.root=.*nowhere: no such folder; point data\.root"):
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


def test_kfold_validation_sets_partition_train_and_val(synthetic_root: Path) -> None:
    val_sets = []
    for fold in range(3):
        dm = make_dm(synthetic_root, split="kfold", num_folds=3, fold=fold)
        dm.setup("fit")
        train = {r.path for r in dm.split_records["train"]}
        val = {r.path for r in dm.split_records["val"]}
        assert not train & val
        assert not {r.patient for r in dm.split_records["train"]} & {
            r.patient for r in dm.split_records["val"]
        }
        val_sets.append(val)
    everything = {r.path for s in ("train", "val") for r in dm.split_records[s]}
    assert set().union(*val_sets) == everything
    assert sum(len(v) for v in val_sets) == len(everything)


def test_holdout_stands_in_for_a_missing_test_folder(synthetic_copy: Path, tmp_path) -> None:
    shutil.rmtree(synthetic_copy / "test")
    dm = make_dm(synthetic_copy, split="patient", holdout_fraction=0.2, report_dir=tmp_path / "run")
    dm.setup("fit")
    assert dm.has_test
    patients = {s: {r.patient for r in dm.split_records[s]} for s in ("train", "val", "test")}
    assert not patients["test"] & (patients["train"] | patients["val"])
    rows = (tmp_path / "run" / "split.csv").read_text().splitlines()
    assert rows[0].split(",")[:5] == ["file", "split", "label", "subtype", "patient"]


def test_a_csv_manifest_works_like_folders(synthetic_root: Path, tmp_path: Path) -> None:
    lines = ["path,label,split"]
    for split in ("train", "val"):
        for cls in ("NORMAL", "PNEUMONIA"):
            folder = synthetic_root / split / cls
            lines += [f"{p},{cls},{split}" for p in sorted(folder.iterdir())]
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    dm = make_dm(manifest)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == sum(
        files_in(synthetic_root, "train", c) for c in ("NORMAL", "PNEUMONIA")
    )
    assert not dm.has_test


def test_bad_image_stops_with_every_bad_file_listed(synthetic_copy: Path) -> None:
    bad = sorted((synthetic_copy / "train" / "PNEUMONIA").iterdir())[:2]
    for path in bad:
        path.write_bytes(b"not a jpeg")
    with pytest.raises(DataError) as raised:
        make_dm(synthetic_copy).setup("fit")
    for path in bad:
        assert str(path) in str(raised.value)


def test_skip_mode_goes_on_and_reports_each_skipped_file(synthetic_copy: Path, tmp_path) -> None:
    bad = sorted((synthetic_copy / "val" / "PNEUMONIA").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    notes = synthetic_copy / "train" / "NORMAL" / "notes.txt"
    notes.write_text("not an image")
    dm = make_dm(synthetic_copy, on_bad_image="skip", report_dir=tmp_path / "run")
    dm.setup("fit")
    assert bad not in {r.path for r in dm.split_records["val"]}
    assert str(bad) in (tmp_path / "run" / "skipped.csv").read_text()
    assert str(notes) in (tmp_path / "run" / "ignored.csv").read_text()


def test_cross_split_duplicate_is_an_error_unless_allowed(synthetic_copy: Path) -> None:
    source = sorted((synthetic_copy / "train" / "NORMAL").iterdir())[0]
    shutil.copy(source, synthetic_copy / "val" / "NORMAL" / "IM-9999-0001.jpeg")
    with pytest.raises(DataError, match="span splits"):
        make_dm(synthetic_copy).setup("fit")
    dm = make_dm(synthetic_copy, allow_cross_split_duplicates=True)
    dm.setup("fit")
    assert len(dm.duplicates.across) == 1


@pytest.mark.parametrize("num_workers", [0, 2])
def test_augmentation_is_reproducible_under_one_seed(synthetic_root: Path, num_workers) -> None:
    from lightning import seed_everything

    def first_batch(seed: int, global_seed: int = 0) -> torch.Tensor:
        seed_everything(global_seed, workers=True)
        dm = make_dm(
            synthetic_root,
            num_workers=num_workers,
            augment={"rotate": 20, "zoom": 0.2},
            seed=seed,
        )
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[0]

    assert torch.equal(first_batch(5), first_batch(5))
    assert not torch.equal(first_batch(5), first_batch(6))
    # The run's seed (data.seed) decides, not whatever the global generators hold.
    assert torch.equal(first_batch(5), first_batch(5, global_seed=1))


NO_AUGMENT = {"rotate": 0, "zoom": 0, "shift": 0, "hflip": False}


def epoch_order(dm: ChestXRayDataModule, split: str, loader) -> list[int]:
    """Which dataset item each image of one pass over ``loader`` is, in the order drawn."""
    dataset = dm.datasets[split]
    index = {dataset[i][0].numpy().tobytes(): i for i in range(len(dataset))}
    assert len(index) == len(dataset), "the test needs distinct images"
    return [index[image.numpy().tobytes()] for images, _ in loader for image in images]


@pytest.mark.parametrize("imbalance", ["class_weight", "none"])
def test_training_batches_are_shuffled_every_epoch(synthetic_root: Path, imbalance: str) -> None:
    dm = make_dm(synthetic_root, augment=NO_AUGMENT, imbalance=imbalance)
    dm.setup("fit")
    loader = dm.train_dataloader()
    first = epoch_order(dm, "train", loader)
    loader.sampler.set_epoch(1)  # as Lightning does before each epoch
    second = epoch_order(dm, "train", loader)
    everything = list(range(len(dm.datasets["train"])))
    assert sorted(first) == sorted(second) == everything  # each image once per epoch
    assert first != everything and second != everything and first != second
    # (seed, epoch) fixes the order, whatever the global generators hold.
    torch.manual_seed(123)
    again = make_dm(synthetic_root, augment=NO_AUGMENT, imbalance=imbalance)
    again.setup("fit")
    assert epoch_order(again, "train", again.train_dataloader()) == first
    other = make_dm(synthetic_root, augment=NO_AUGMENT, imbalance=imbalance, seed=1)
    other.setup("fit")
    assert epoch_order(other, "train", other.train_dataloader()) != first


def test_evaluation_batches_keep_the_stored_order(synthetic_root: Path) -> None:
    dm = make_dm(synthetic_root, augment=NO_AUGMENT)
    dm.setup("fit")
    for split, loader in (
        ("val", dm.val_dataloader()),
        ("test", dm.test_dataloader()),
        ("train", dm.eval_dataloader("train")),
    ):
        assert epoch_order(dm, split, loader) == list(range(len(dm.datasets[split])))


def test_eval_loader_of_the_training_split_is_not_augmented(synthetic_root: Path) -> None:
    augmented = make_dm(synthetic_root, augment={"rotate": 20, "zoom": 0.2, "hflip": True})
    augmented.setup("fit")
    plain = make_dm(synthetic_root, augment=NO_AUGMENT)
    plain.setup("fit")
    images = [batch for batch, _ in augmented.eval_dataloader("train")]
    stored = [batch for batch, _ in plain.eval_dataloader("train")]
    assert all(torch.equal(a, b) for a, b in zip(images, stored, strict=True))
    assert augmented.datasets["train"].transform is not None  # training itself still augments
