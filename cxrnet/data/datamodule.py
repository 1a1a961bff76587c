"""The LightningDataModule: folders (or a manifest) to decoded images to loaders."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset

from cxrnet.data.batch_augment import DeviceAugment
from cxrnet.data.bulk import collector_paused
from cxrnet.data.cache import decode_order, load_images
from cxrnet.data.cache_listing import remember_listing
from cxrnet.data.data_settings import DataSettings, Imbalance, Task
from cxrnet.data.dataset import SeededXRayDataset, SourcedDataset, XRayDataset
from cxrnet.data.decode import DicomWindow, Equalize
from cxrnet.data.digests import DigestStore
from cxrnet.data.duplicates import DuplicateReport, check_duplicates
from cxrnet.data.files import Facts
from cxrnet.data.film_listing import Listing, find_films, list_films, scored_as_given
from cxrnet.data.film_report import check_classes_kept, report_films, warn_small_val
from cxrnet.data.findings import FindingTargets, Uncertain, positive_weights
from cxrnet.data.loaders import (
    LoaderOptions,
    TrainingDraw,
    distributed_training_loader,
    evaluation_loader,
    loss_class_weights,
    resumable_training_loader,
    sampling_weights,
)
from cxrnet.data.other_classes import OtherFilm
from cxrnet.data.other_films import load_others
from cxrnet.data.records import CLASS_NAMES, SUBTYPE_NAMES, UNUSED_SPLIT, Record, check_subtypes
from cxrnet.data.sampling import EpochSampler, training_position
from cxrnet.data.shared_splits import SharedSplits
from cxrnet.data.source_balance import source_weights
from cxrnet.data.sources import source_name, source_of
from cxrnet.data.split_report import count_table
from cxrnet.data.splits import SplitName, make_splits
from cxrnet.data.transforms import AffineRecipe, build_train_transform
from cxrnet.data.workers import AUTO_WORKERS, data_workers
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)


def _same(images: torch.Tensor) -> torch.Tensor:
    return images


class ChestXRayDataModule(LightningDataModule):
    """Train/val/test loaders for ``root/{train,val,test}/{NORMAL,PNEUMONIA}`` or a CSV manifest.

    ``root`` is a folder (nested layouts too), a CSV manifest, or a list of either, combined.
    Every image is decoded once into a uint8 array (cached on disk under ``cache_dir``);
    augmentation runs per epoch on the training split only. ``report_dir`` receives the counts,
    the split file and every skipped or ignored file with its reason. ``seed`` (the run's seed)
    fixes each epoch's training order, weighted draw and augmentation (``data.sampling``).
    Every keyword argument is a ``data.*`` key; ``DataSettings`` (``cxrnet.data.data_settings``)
    checks them once and says what each does.
    """

    def __init__(
        self,
        root: str | Path | list[str | Path] | None = None,
        image_size: int = 150,
        resize: Literal["squash", "letterbox"] = "squash",
        equalize: Equalize | bool = "none",
        interpolation: Literal["area", "bilinear"] = "area",
        dicom_window: DicomWindow = "auto",
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | str = AUTO_WORKERS,
        pin_memory: bool | None = None,
        imbalance: Imbalance = "class_weight",
        augment: Mapping[str, Any] | None = None,
        task: Task = "binary",
        findings: Sequence[str] | None = None,
        uncertain: Uncertain = "ignore",
        split: SplitName = "official",
        val_fraction: float = 0.2,
        num_folds: int = 5,
        fold: int = 0,
        holdout_fraction: float = 0.0,
        split_seed: int = 0,
        holdout_seed: int | None = None,
        allow_cross_split_duplicates: bool = False,
        cache_dir: str | Path | None = None,
        decode_workers: int | str = 0,
        on_bad_image: Literal["error", "skip"] = "error",
        report_dir: str | Path | None = None,
        seed: int = 0,
        unsplit: Literal["train", "test"] = "train",
        min_val_per_class: int = 20,
        keep_in_val: Sequence[str] = (),
        verify_files: bool = True,
        sources: Mapping[str, Any] | None = None,
        source_roles: Mapping[str, str] | None = None,
        source_balance: str | Mapping[str, float] = "none",
        source_train_size: Mapping[str, int | float] | None = None,
        other_classes: Literal["error", "ignore"] = "error",
    ) -> None:
        super().__init__()
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        settings, hyperparameters = DataSettings.from_arguments(arguments)
        self.settings = settings
        self.save_hyperparameters(hyperparameters, logger=False)
        self.sources = list(settings.sources)
        self.root = self.sources[0]
        self.split_config = settings.split
        self.decode_params = settings.decode
        self.batch_size = settings.batch_size
        self.eval_batch_size = settings.eval_batch_size
        self.decode_workers, self.num_workers = data_workers(
            settings.decode_workers, settings.num_workers
        )
        # Pinned pages only speed up copies to a GPU; on a CPU-only machine they cost memory.
        pin = settings.pin_memory
        self.pin_memory = torch.cuda.is_available() if pin is None else pin
        self.imbalance = settings.imbalance
        self.device_augment: DeviceAugment | None = None
        self.task = settings.task
        self.cache_dir = settings.cache_dir
        self.on_bad_image = settings.on_bad_image
        self.report_dir = Path(report_dir) if report_dir else None
        self.seed = settings.seed
        self.unsplit = settings.unsplit
        # Under DDP, set by the training run: rank 0 resolves the splits, the others read them.
        self.shared_splits: SharedSplits | None = None
        self._init_state()

    def _init_state(self) -> None:
        """What ``setup`` and the loaders fill in."""
        # The training sampler in use, and where the next one starts when resuming.
        self._train_sampler: EpochSampler | None = None
        self._resume_at: tuple[int, int] | None = None
        self.split_records: dict[str, list[Record]] = {}
        # The training films data.source_train_size left out: listed, never decoded.
        self.unused: list[Record] = []
        # The splits before unreadable films are left out: what other DDP ranks receive.
        self.resolved_splits: dict[str, list[Record]] = {}
        self.datasets: dict[str, XRayDataset] = {}
        self.skipped: list[tuple[Record, str]] = []
        self.ignored: list[tuple[Path, str]] = []
        self.duplicates = DuplicateReport()
        self.files_hashed = 0  # by the duplicate check of the last setup (0 on a warm start)
        # Test films of classes other than NORMAL/PNEUMONIA (``unsplit='test'`` only), decoded
        # after setup, in ``other_dataset``'s order: scored and reported as their own groups.
        self.others: list[OtherFilm] = []
        self.other_dataset: XRayDataset | None = None
        # data.task=findings: what the target rows hold.
        self.finding_targets = FindingTargets(self.settings.findings, self.settings.uncertain)

    def use_findings(self, names: Sequence[str]) -> None:
        """Serve targets for these findings (a findings model's, scoring other data)."""
        if self.datasets:
            raise RuntimeError("use_findings must be called before setup()")
        self.finding_targets.use(names)

    @property
    def findings(self) -> tuple[str, ...]:
        """The findings the targets hold, in order (data.task=findings; empty otherwise)."""
        return (self.finding_targets.names or ()) if self.task == "findings" else ()

    @property
    def finding_weights(self) -> list[list[float]] | None:
        """Per finding, the loss weights of its absent and present training films
        (``findings.positive_weights``) when ``imbalance='class_weight'``, else None."""
        if not self.findings or self.imbalance != "class_weight":
            return None
        return positive_weights(self.datasets["train"].targets.numpy()).tolist()

    @property
    def class_names(self) -> tuple[str, ...]:
        return SUBTYPE_NAMES if self.task == "subtype" else CLASS_NAMES

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_test(self) -> bool:
        self._require_setup()
        return "test" in self.datasets

    @property
    def class_weights(self) -> list[float] | None:
        """Loss weights per class when ``imbalance='class_weight'``, else None."""
        if self.imbalance != "class_weight":
            return None
        return loss_class_weights(self._draw("train"), self.num_classes)

    def _draw(self, split: str) -> TrainingDraw:
        """The split's films as the training draw sees them: labels, sources, source shares."""
        sources = [source_of(record) for record in self.split_records.get(split, [])]
        balance = source_weights(self.settings.source_balance, sources)
        return TrainingDraw(self._labels(split), sources, balance)

    @property
    def val_sources(self) -> tuple[str, ...]:
        """The sources (``source`` metadata) of the val films, sorted; empty when no val film
        names one or all name the same (per-source metrics would repeat the pooled ones). A val
        film without one, beside films with one, is ``unknown``."""
        self._require_setup()
        named = {source_name(r) for r in self.split_records.get("val", [])}
        return tuple(sorted(named)) if len(named) >= 2 else ()

    def label_of(self, record: Record) -> int:
        """The film's class index; for data.task=findings, pneumonia's (the triage finding)."""
        return record.label if self.task != "subtype" else SUBTYPE_NAMES.index(record.subtype)

    def setup(self, stage: str | None = None) -> None:
        with collector_paused():  # hundreds of thousands of records built and kept (data.bulk)
            self._setup(stage)

    def _setup(self, stage: str | None) -> None:
        if self.datasets:
            return
        if self.shared_splits is not None and self.shared_splits.receives:
            self._load_splits(self.shared_splits.receive(), stage)
            return
        listing = find_films(self.settings, self._find_records)
        found, facts = listing.records, listing.facts
        self.ignored, self.others = listing.ignored, listing.others
        if self.task == "subtype":
            check_subtypes([record for records in found.values() for record in records])
        # Digests kept beside the image cache: a warm start reads no file to compare them.
        digests = DigestStore(self.cache_dir)
        self.duplicates = check_duplicates(
            found,
            allow_cross_split=self.settings.allow_cross_split_duplicates,
            skip_unreadable=self.on_bad_image == "skip",
            digests=digests,
            facts=facts,
        )
        digests.save()
        self.files_hashed = digests.hashed
        if "train" not in found and stage not in (None, "fit"):
            splits = scored_as_given(found, self.split_config, self.root)
        else:
            splits = make_splits(found, self.split_config, duplicates=self.duplicates.all_groups)
        self.resolved_splits = splits
        self._load_splits(splits, stage, facts)

    def _load_splits(
        self, splits: dict[str, list[Record]], stage: str | None, facts: Facts | None = None
    ) -> None:
        """The splits' films decoded (or read from the cache) into the datasets; without
        ``facts`` (a rank that received its splits) the cache stats each film itself. The
        ``unused`` films are kept aside, for the counts and split.csv only."""
        splits = dict(splits)
        self.unused = splits.pop(UNUSED_SPLIT, [])
        ordered = decode_order(record for records in splits.values() for record in records)
        loaded = load_images(
            ordered,
            self.decode_params,
            cache_dir=self.cache_dir,
            num_workers=self.decode_workers,
            on_bad_image=self.on_bad_image,
            facts=facts,
        )
        if loaded.cache_path is not None and self.cache_dir is not None:
            remember_listing(ordered, self.decode_params, self.cache_dir, loaded.cache_path)
        self.skipped = loaded.skipped
        position = {record.path: i for i, record in enumerate(loaded.records)}
        if self.settings.augment_on_device:
            train_transform = None
            self.device_augment = DeviceAugment(AffineRecipe.scaled(**self.settings.augment))
        else:
            train_transform = build_train_transform(**self.settings.augment)
        if self.task == "findings":
            self.finding_targets.resolve(splits)
        for split, records in splits.items():
            kept = [record for record in records if record.path in position]
            labels = [self.label_of(record) for record in kept]
            paths = {record.path for record in records}
            check_classes_kept(
                split,
                self.root,
                [self.label_of(record) for record in records],
                labels,
                self.class_names,
                [(record, why) for record, why in self.skipped if record.path in paths],
            )
            self.split_records[split] = kept
            self.datasets[split] = XRayDataset(
                loaded.images,
                labels,
                [position[record.path] for record in kept],
                transform=train_transform if split == "train" else None,
                targets=self.finding_targets.rows(kept) if self.task == "findings" else None,
            )
        if self.others:
            self._load_others()
        if "test" not in self.datasets:
            log.warning("no test folder under %s: testing will be skipped", self.root)
        if stage in (None, "fit"):
            self._warn_small_val()
        self._report()

    def _warn_small_val(self) -> None:
        labels = [self.label_of(record) for record in self.split_records.get("val", [])]
        minimum = self.settings.min_val_per_class
        warn_small_val(labels, self.class_names, minimum, self.split_config.split)

    def films_to_decode(self) -> list[Record]:
        """Every film found, in the order ``setup`` decodes them into the image cache: what a
        sharded first build of the cache decodes (``cxrnet-cache``), found without the
        duplicate check or a split, which change neither the films nor their order."""
        found = self._find_records(None).records
        return decode_order(record for records in found.values() for record in records)

    def _find_records(self, facts: Facts | None) -> Listing:
        """One walk of every source (``facts`` None stats no film)."""
        return list_films(self.settings, facts)

    def _load_others(self) -> None:
        loaded = load_others(
            self.others,
            (record for records in self._listed().values() for record in records),
            self.root,
            self.decode_params,
            self.cache_dir,
            self.decode_workers,
            self.on_bad_image,
        )
        self.skipped.extend(loaded.skipped)
        self.others, self.other_dataset = loaded.films, loaded.dataset

    def other_dataloader(self) -> DataLoader:
        """The films of other classes in ``others``' order, as an evaluation loader."""
        if self.other_dataset is None:
            raise DataError(f"no films of classes other than NORMAL/PNEUMONIA under {self.root}")
        options = LoaderOptions(self.eval_batch_size, self.num_workers, self.pin_memory, 1)
        return evaluation_loader(self.other_dataset, options)

    def _require_setup(self) -> None:
        if not self.datasets:
            raise RuntimeError("call setup() before asking the data module for data")

    def _labels(self, split: str) -> np.ndarray:
        self._require_setup()
        return self.datasets[split].labels.numpy()

    def counts(self) -> list[dict[str, Any]]:
        """Images and patients per split, class and subtype: the table printed at setup (with
        the ``unused`` films, when ``source_train_size`` left some out)."""
        return count_table(self._listed())

    def _listed(self) -> dict[str, list[Record]]:
        """Every split's films as reported: the decoded splits, and ``unused`` if any."""
        if not self.unused:
            return self.split_records
        return {**self.split_records, UNUSED_SPLIT: self.unused}

    def _report(self) -> None:
        # A rank that received its splits (no resolved splits) checked no duplicates itself.
        duplicates = self.duplicates if self.resolved_splits else None
        report_films(self._listed(), duplicates, self.ignored, self.skipped, self.report_dir)

    def _loader(self, split: str, train: bool = False, with_sources: bool = False) -> DataLoader:
        dataset = self._loader_dataset(split, train)
        if with_sources and (sources := self.val_sources):
            position = {name: i for i, name in enumerate(sources)}
            dataset = SourcedDataset(
                dataset, [position[source_name(r)] for r in self.split_records[split]]
            )
        options = LoaderOptions(
            self.batch_size if train else self.eval_batch_size,
            self.num_workers,
            self.pin_memory,
            self.trainer.world_size if self.trainer is not None else 1,
        )
        if not train:
            return evaluation_loader(dataset, options)
        weights = sampling_weights(self._draw(split), self.imbalance, self.num_classes)
        if options.world_size > 1:
            return distributed_training_loader(dataset, weights, options)
        epoch, skip = self._resume_at or (self._current_epoch(), 0)
        self._resume_at = None
        self._train_sampler = EpochSampler(len(dataset), self.seed, weights, epoch=epoch)
        return resumable_training_loader(dataset, self._train_sampler, epoch, skip, options)

    def _loader_dataset(self, split: str, train: bool) -> Dataset:
        """The split's films as the loader serves them: augmented (on the workers or, seeded,
        on the device) for training, as they are otherwise."""
        self._require_setup()
        if split not in self.datasets:
            raise DataError(f"no {split} split under {self.root}")
        stored = self.datasets[split]
        if not train and stored.transform is not None:
            # Predictions on the training split (a report, a threshold) need the films as they
            # are, not this epoch's augmented draw; the images array is shared, not copied.
            return XRayDataset(stored.images, stored.labels, stored.indices, targets=stored.targets)
        if train and self.device_augment is not None:
            # uint8 and a seed per image; the hooks below augment the batch on the device.
            return SeededXRayDataset(stored)
        return stored

    def _current_epoch(self) -> int:
        """The epoch Lightning passes to the sampler's set_epoch next."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_progress.current.processed if trainer else 0

    def state_dict(self) -> dict[str, int]:
        """Where training stands: the epoch and its batches trained (``training_position``)."""
        return training_position(self._train_sampler, self.trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores this before it asks for any loader (even early, for
        # estimated_stepping_batches): the next training loader starts there.
        if state_dict:
            self._resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the CPU: each training image's augmentation parameters, drawn from its seed."""
        augment = self.device_augment
        return augment.before_transfer(batch) if augment is not None else batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the model's device: the training batch warped and scaled to [0, 1] in one call."""
        if self.device_augment is None:
            return batch
        trainer = self.trainer
        convert = trainer.precision_plugin.convert_input if trainer is not None else _same
        return self.device_augment.after_transfer(batch, convert)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """The val films, each with its source index too where they name sources (per-source
        metrics); ``eval_dataloader`` serves them without."""
        return self._loader("val", with_sources=True)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def eval_dataloader(self, split: str) -> DataLoader:
        """Any split in its stored order, without augmentation: for per-image predictions."""
        return self._loader(split)
