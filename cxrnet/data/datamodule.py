"""The LightningDataModule: folders (or a manifest) to decoded images to loaders."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning import LightningDataModule
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from cxrnet.data.augment_settings import check_augment
from cxrnet.data.batch_augment import DeviceAugment, DeviceBatch
from cxrnet.data.cache import load_images
from cxrnet.data.cache_listing import remember_listing, trusted_facts
from cxrnet.data.dataset import SeededSample, SeededXRayDataset, SourcedDataset, XRayDataset
from cxrnet.data.decode import DecodeParams, DicomWindow, Equalize
from cxrnet.data.digests import DigestStore
from cxrnet.data.discovery import discover_folders
from cxrnet.data.duplicates import DuplicateReport, check_duplicates
from cxrnet.data.files import Facts
from cxrnet.data.manifest import combine_records, read_manifest
from cxrnet.data.other_classes import OtherFilm
from cxrnet.data.records import (
    CLASS_NAMES,
    PATH_ERRORS,
    SUBTYPE_NAMES,
    UNUSED_SPLIT,
    Record,
    check_subtypes,
)
from cxrnet.data.sampling import EpochSampler, ResumableLoader
from cxrnet.data.shared_splits import SharedSplits
from cxrnet.data.source_balance import (
    check_source_balance,
    draw_weights,
    drawn_class_weights,
    source_weights,
)
from cxrnet.data.sources import (
    named_sources,
    source_name,
    source_of,
    tag_source,
    train_only_sources,
    unnamed_source,
)
from cxrnet.data.splits import (
    SplitConfig,
    SplitName,
    count_table,
    format_count_table,
    make_splits,
    write_split_csv,
)
from cxrnet.data.transforms import AffineRecipe, build_train_transform
from cxrnet.data.workers import (
    AUTO_WORKERS,
    MAX_DECODE_WORKERS,
    MAX_LOADER_WORKERS,
    available_cpus,
    resolve_workers,
)
from cxrnet.plain_data import plain_data
from cxrnet.user_errors import DataError

log = logging.getLogger(__name__)

Imbalance = Literal["class_weight", "sampler", "none"]
Task = Literal["binary", "subtype"]


# The ignored files the log names one by one when ignored.csv lists them all.
_IGNORED_SHOWN = 10


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> list[float]:
    """sklearn's 'balanced' weights, n / (k * n_c): 1.94 / 0.67 on the real training split."""
    counts = np.bincount(labels, minlength=num_classes)
    missing = [i for i, count in enumerate(counts) if count == 0]
    if missing:
        raise DataError(f"training split has no images of class index {missing}; cannot weight")
    return [float(len(labels) / (num_classes * count)) for count in counts]


def per_process_batch_size(global_batch: int, world_size: int, key: str = "data.batch_size") -> int:
    """``data.batch_size`` is the global batch: each of ``world_size`` processes loads its share.

    Changing the number of GPUs then leaves the optimisation (and the learning rate that suits
    it) as it was; a batch that does not divide evenly is an error rather than a silent change.
    """
    if global_batch % world_size:
        raise ValueError(
            f"{key}={global_batch} is the global batch and must divide evenly over "
            f"{world_size} processes (trainer.devices x trainer.num_nodes); use a multiple of "
            f"{world_size}, e.g. {max(1, round(global_batch / world_size)) * world_size}"
        )
    return global_batch // world_size


def decode_order(records: Iterable[Record]) -> list[Record]:
    """The films in the order they are decoded and cached: by path, whatever the split, so every
    re-split (each k-fold fold, each seed) shares one cache."""
    return sorted(records, key=lambda record: str(record.path))


def _check_choices(imbalance: str, task: str, batch_size: int) -> None:
    if imbalance not in ("class_weight", "sampler", "none"):
        raise ValueError(
            f"imbalance must be 'class_weight', 'sampler' or 'none', got {imbalance!r}"
        )
    if task not in ("binary", "subtype"):
        raise ValueError(f"task must be 'binary' or 'subtype', got {task!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


class ChestXRayDataModule(LightningDataModule):
    """Train/val/test loaders for ``root/{train,val,test}/{NORMAL,PNEUMONIA}`` or a CSV manifest.

    ``root`` is a folder (nested layouts too), a CSV manifest, or a list of either, combined.
    Every image is decoded once into a uint8 array (cached on disk under ``cache_dir``);
    augmentation runs per epoch on the training split only. ``report_dir`` receives the counts,
    the split file and every skipped or ignored file with its reason. ``seed`` (the run's seed)
    fixes each epoch's training order, weighted draw and augmentation (``data.sampling``).
    ``augment`` holds the recipe (``build_train_transform``'s arguments) and ``on_device``:
    when true, training batches travel as uint8 and are augmented on the model's device
    (``data.batch_augment``, in the batch-transfer hooks) instead of on the loader workers.
    ``unsplit`` is where films that name no split go: ``train`` (training data, re-split by
    ``split``) or ``test`` (an external site's labelled films: ``cxrnet-eval data.root=...``).
    Data without training films is scored as it is by ``setup("test")``; training needs them.
    A val split with fewer than ``min_val_per_class`` films of a class warns when training
    starts: the checkpoint and the threshold chosen on it would be noise. ``keep_in_val``: source
    splits whose films always go to val in a re-split (``SplitConfig.keep_in_val``).
    ``verify_files=False`` trusts the image cache's index for a listing it was built for,
    so a warm start stats no film (``cxrnet.data.cache_listing`` says what that trusts).
    ``sources`` names each folder or manifest instead of ``root`` (``data.sources``): every film
    carries its source (metadata ``source``; from an unnamed root, its folder name or manifest
    stem unless the manifest has a source column). ``source_roles`` makes sources training-only
    (``SplitConfig.train_only_sources``); ``source_balance`` sets how often the training draw
    takes each source (cxrnet/data/source_balance.py). ``source_train_size`` keeps about N (or a
    fraction) of a source's training films (``SplitConfig.source_train_size``); the rest,
    ``unused``, are counted and written to split.csv but never decoded, trained or scored.
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
        sources: Mapping[str, str | Path] | None = None,
        source_roles: Mapping[str, str] | None = None,
        source_balance: str | Mapping[str, float] = "none",
        source_train_size: Mapping[str, int | float] | None = None,
        other_classes: Literal["error", "ignore"] = "error",
    ) -> None:
        super().__init__()
        _check_choices(imbalance, task, batch_size)
        if unsplit not in ("train", "test"):
            raise ValueError(f"unsplit must be 'train' or 'test', got {unsplit!r}")
        if other_classes not in ("error", "ignore"):
            raise DataError(
                f"data.other_classes={other_classes!r}: choose error (a manifest row of another "
                "class than NORMAL/PNEUMONIA stops the run, naming its line) or ignore (such "
                "films are listed in ignored.csv, never trained, validated or tested)"
            )
        if sources and root:
            raise DataError(
                f"data.root={root} and data.sources are both set; set one: data.root=null to "
                "use the named sources, or data.sources=null"
            )
        if not sources and not root:
            raise DataError("no data given: set data.root or data.sources")
        # Any sequence of sources (a Hydra ListConfig too), or one folder or manifest. Absolute,
        # so the checkpoint's data settings work from any folder; plain data, so it loads with
        # weights_only=True (cxrnet.models.checkpoint).
        single = isinstance(root, (str, Path))
        if sources:
            named = named_sources(plain_data(sources))
            self.sources = list(named.values())
            self.source_names: list[str | None] = list(named)
            sources = {name: str(path) for name, path in named.items()}
        else:
            self.sources = [
                Path(source).expanduser().absolute() for source in ([root] if single else root)
            ]
            self.source_names = [None] * len(self.sources)
            root = str(self.sources[0]) if single else [str(source) for source in self.sources]
            _warn_shared_source_names(self.sources)
        source_roles = plain_data(source_roles or {})
        source_train_size = plain_data(source_train_size) if source_train_size is not None else None
        source_balance = plain_data(source_balance) if source_balance is not None else "none"
        check_source_balance(source_balance)  # before any decoding
        augment = plain_data(augment or {})
        check_augment(augment)  # before any decoding
        keep_in_val = [str(name) for name in keep_in_val or ()]
        cache_dir = str(Path(cache_dir).expanduser().absolute()) if cache_dir else None
        self.save_hyperparameters(ignore=["report_dir"], logger=False)
        self.root = self.sources[0]
        self.split_config = SplitConfig(
            split,
            val_fraction,
            num_folds,
            fold,
            holdout_fraction,
            split_seed,
            holdout_seed,
            tuple(keep_in_val),
            train_only_sources(source_roles),
            source_train_size=source_train_size,
        )
        self.source_balance = source_balance
        self.other_classes = other_classes
        self.allow_cross_split_duplicates = allow_cross_split_duplicates
        self.decode_params = DecodeParams(image_size, resize, equalize, interpolation, dicom_window)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        # ``auto``: the CPUs this job was given (Slurm's share or the affinity mask), capped.
        cpus, cpus_from = available_cpus()
        self.num_workers = resolve_workers(
            num_workers, "data.num_workers", cpus, MAX_LOADER_WORKERS
        )
        self.decode_workers = resolve_workers(
            decode_workers, "data.decode_workers", cpus, MAX_DECODE_WORKERS
        )
        if AUTO_WORKERS in (num_workers, decode_workers):
            log.info(
                "data workers: %d decoding, %d loading (%d CPUs available, from %s)",
                self.decode_workers,
                self.num_workers,
                cpus,
                cpus_from,
            )
        # Pinned pages only speed up copies to a GPU; on a CPU-only machine they cost memory.
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.imbalance = imbalance
        self.augment = dict(augment or {})
        self.augment_on_device = bool(self.augment.pop("on_device", False))
        self.device_augment: DeviceAugment | None = None
        self.task = task
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.on_bad_image = on_bad_image
        self.report_dir = Path(report_dir) if report_dir else None
        self.seed = seed
        self.unsplit = unsplit
        self.min_val_per_class = min_val_per_class
        # Under DDP, set by the training run: rank 0 resolves the splits, the others read them.
        self.shared_splits: SharedSplits | None = None
        self.verify_files = verify_files
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

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES if self.task == "binary" else SUBTYPE_NAMES

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
        balance = self._source_weights()
        if balance is not None:
            # The classes the model sees are those the source-balanced draw shows it.
            sources = [source_of(record) for record in self.split_records["train"]]
            labels = self._labels("train")
            return drawn_class_weights(sources, labels, balance, self.num_classes)
        return balanced_class_weights(self._labels("train"), self.num_classes)

    def _source_weights(self) -> dict[str, float] | None:
        """Each training source's share of the draw (``data.source_balance``), or None."""
        sources = [source_of(record) for record in self.split_records.get("train", [])]
        return source_weights(self.source_balance, sources)

    @property
    def val_sources(self) -> tuple[str, ...]:
        """The sources (``source`` metadata) of the val films, sorted; empty when no val film
        names one or all name the same (per-source metrics would repeat the pooled ones). A val
        film without one, beside films with one, is ``unknown``."""
        self._require_setup()
        named = {source_name(r) for r in self.split_records.get("val", [])}
        return tuple(sorted(named)) if len(named) >= 2 else ()

    def label_of(self, record: Record) -> int:
        return record.label if self.task == "binary" else SUBTYPE_NAMES.index(record.subtype)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.shared_splits is not None and self.shared_splits.receives:
            self._load_splits(self.shared_splits.receive(), stage)
            return
        found, facts = self._find_files()
        if self.task == "subtype":
            check_subtypes([record for records in found.values() for record in records])
        # Digests kept beside the image cache: a warm start reads no file to compare them.
        digests = DigestStore(self.cache_dir)
        self.duplicates = check_duplicates(
            found,
            allow_cross_split=self.allow_cross_split_duplicates,
            skip_unreadable=self.on_bad_image == "skip",
            digests=digests,
            facts=facts,
        )
        digests.save()
        self.files_hashed = digests.hashed
        if "train" not in found and stage not in (None, "fit"):
            splits = self._scored_as_given(found)
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
        if self.augment_on_device:
            train_transform = None
            self.device_augment = DeviceAugment(AffineRecipe.scaled(**self.augment))
        else:
            train_transform = build_train_transform(**self.augment)
        for split, records in splits.items():
            kept = [record for record in records if record.path in position]
            self._check_classes_after_skipping(split, records, kept)
            self.split_records[split] = kept
            self.datasets[split] = XRayDataset(
                loaded.images,
                [self.label_of(record) for record in kept],
                [position[record.path] for record in kept],
                transform=train_transform if split == "train" else None,
            )
        if self.others:
            self._load_others()
        if "test" not in self.datasets:
            log.warning("no test folder under %s: testing will be skipped", self.root)
        if stage in (None, "fit"):
            self._warn_small_val()
        self._report()

    def _warn_small_val(self) -> None:
        """The official Kaggle val split has 8+8 films: one seed of experiment=best kept epoch 0
        of 6 because val AUROC there was 0.94 and never higher (issue 20 row 15)."""
        labels = [self.label_of(record) for record in self.split_records.get("val", [])]
        per_class = [labels.count(i) for i in range(self.num_classes)]
        if min(per_class) >= self.min_val_per_class:
            return
        counts = ", ".join(
            f"{n} {name}" for n, name in zip(per_class, self.class_names, strict=True)
        )
        log.warning(
            "the val split (data.split=%s) has %s films, fewer than data.min_val_per_class=%d "
            "of each class: the checkpoint and the threshold chosen on it cannot tell epochs "
            "apart at this size; use data.split=patient (a patient-grouped data.val_fraction of "
            "train+val) or add val films",
            self.split_config.split,
            counts,
            self.min_val_per_class,
        )

    def _scored_as_given(self, found: dict[str, list[Record]]) -> dict[str, list[Record]]:
        """Data without training films (an external test set): its splits as they are, as no
        split setting can carve anything from films that were never training data."""
        if self.split_config.holdout_fraction > 0:
            raise DataError(
                f"data.holdout_fraction={self.split_config.holdout_fraction} carves a test set "
                f"from training films and {self.root} has none; set data.holdout_fraction=0"
            )
        log.info(
            "%s holds no training films: scored as given (%s)",
            self.root,
            ", ".join(f"{split} {len(records)}" for split, records in found.items()),
        )
        return dict(found)

    def _check_classes_after_skipping(
        self, split: str, records: list[Record], kept: list[Record]
    ) -> None:
        """No class of ``split`` lost to skipped files; else training would run every epoch
        and only then fail (no AUROC, no threshold, no class weight)."""
        # Only classes that skipping removed: a split may lack one to begin with (a small
        # sample), which the existing checks report or accept.
        before = {self.label_of(record) for record in records}
        after = {self.label_of(record) for record in kept}
        missing = [name for i, name in enumerate(self.class_names) if i in before - after]
        if not missing:
            return
        in_split = {record.path for record in records}
        skipped = [f"{r.path} ({reason})" for r, reason in self.skipped if r.path in in_split]
        raise DataError(
            f"split {split!r} from {self.root} has no {' or '.join(missing)} images after "
            f"skipping {len(records) - len(kept)} unreadable file(s): {'; '.join(skipped[:5])}"
            f"{' ...' if len(skipped) > 5 else ''}; fix or replace those files"
        )

    def films_to_decode(self) -> list[Record]:
        """Every film found, in the order ``setup`` decodes them into the image cache: what a
        sharded first build of the cache decodes (``cxrnet-cache``), found without the
        duplicate check or a split, which change neither the films nor their order."""
        found = self._find_records(None)
        return decode_order(record for records in found.values() for record in records)

    def _find_files(self) -> tuple[dict[str, list[Record]], Facts]:
        """The records, and each film's facts (resolved path, size, mtime) from one stat, or
        from the image cache's index when ``verify_files`` is off and the listing matches."""
        if not self.verify_files and self.cache_dir is not None:
            found = self._find_records(None)
            listing = sorted(
                (record for records in found.values() for record in records),
                key=lambda record: str(record.path),
            )
            trusted = trusted_facts(listing, self.decode_params, self.cache_dir)
            if trusted is not None:
                log.info(
                    "data.verify_files=false: %d films taken as the image cache recorded them "
                    "(no file stat'ed; a film edited in place since would keep its old pixels)",
                    len(trusted),
                )
                return found, trusted
            log.info("data.verify_files=false, but no image cache lists these films: checking")
            self.ignored.clear()
        facts: Facts = {}
        return self._find_records(facts), facts

    def _find_records(self, facts: Facts | None) -> dict[str, list[Record]]:
        """Records from every source; ``facts`` None stats no film (names only)."""
        parts = []
        # Only a test set keeps films of other classes; training data lists them as ignored
        # (folders) or refuses them (manifest rows, naming each line: a misspelt label must not
        # drop a film from training), unless data.other_classes=ignore lists those too.
        scored = self.unsplit == "test"
        ignoring = not scored and self.other_classes == "ignore"
        others: list[OtherFilm] | None = [] if scored or ignoring else None
        for source, name in zip(self.sources, self.source_names, strict=True):
            if source.suffix.lower() == ".csv":
                manifest = read_manifest(
                    source,
                    self.unsplit,
                    others,
                    facts,
                    check_files=facts is not None,
                    others_any_split=ignoring,
                )
                parts.append(tag_source(manifest, source, name))
                continue
            result = discover_folders(
                source, None if self.unsplit == "train" else self.unsplit, facts
            )
            parts.append(tag_source(result.records, source, name))
            self.ignored.extend(result.ignored)
            if others is not None:
                others.extend(result.others)
        if ignoring:
            self.ignored.extend(
                (film.path, f"class {film.class_name}: neither NORMAL nor PNEUMONIA "
                 "(data.other_classes=ignore)")
                for film in others or []
            )  # fmt: skip
            others = []
        self.others = others or []
        return combine_records(*parts)

    def _load_others(self) -> None:
        """Decode the films of other classes like the test films; unreadable ones follow
        ``on_bad_image`` and are listed in ``skipped`` as any other film."""
        listed = {str(film.path) for film in self.others}
        paths = {str(record.path) for records in self._listed().values() for record in records}
        clashes = sorted(listed & paths)
        if clashes:
            raise DataError(
                f"{len(clashes)} file(s) are listed both as NORMAL/PNEUMONIA and as another "
                f"class under {self.root} (first: {clashes[0]}); list each film once"
            )
        records = sorted(
            (film.decoding_record() for film in self.others), key=lambda r: str(r.path)
        )
        loaded = load_images(
            records,
            self.decode_params,
            cache_dir=self.cache_dir,
            num_workers=self.decode_workers,
            on_bad_image=self.on_bad_image,
        )
        self.skipped.extend(loaded.skipped)
        position = {record.path: i for i, record in enumerate(loaded.records)}
        self.others = [film for film in self.others if film.path in position]
        self.other_dataset = XRayDataset(
            loaded.images,
            [0] * len(self.others),  # placeholders: these films have neither class
            [position[film.path] for film in self.others],
        )

    def other_dataloader(self) -> DataLoader:
        """The films of other classes in ``others``' order, as an evaluation loader."""
        if self.other_dataset is None:
            raise DataError(f"no films of classes other than NORMAL/PNEUMONIA under {self.root}")
        return DataLoader(
            self.other_dataset,
            batch_size=self.eval_batch_size,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )

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
        log.info("images per split:\n%s", format_count_table(self.counts()))
        splits = self._listed()
        names = sorted({source_of(record) for records in splits.values() for record in records})
        if len(names) > 1:  # the same counts per source: one table can hide a source's lack
            for name in names:
                own = {
                    s: [r for r in records if source_of(r) == name] for s, records in splits.items()
                }
                log.info(
                    "images per split, source %s:\n%s", name, format_count_table(count_table(own))
                )
        if self.resolved_splits:  # a rank that received its splits checked nothing itself
            log.info("%s", self.duplicates.summary())
        # Hundreds of films of another class would bury the log; ignored.csv lists every one.
        shown = self.ignored if self.report_dir is None else self.ignored[:_IGNORED_SHOWN]
        for path, reason in shown:
            log.warning("ignored %s: %s", path, reason)
        if len(shown) < len(self.ignored):
            log.warning(
                "ignored %d more file(s), every one listed in %s",
                len(self.ignored) - len(shown),
                self.report_dir / "ignored.csv",
            )
        for record, reason in self.skipped:
            log.warning("skipped %s: %s", record.path, reason)
        if self.report_dir is None:
            return
        self.report_dir.mkdir(parents=True, exist_ok=True)
        _write_csv(self.report_dir / "counts.csv", self.counts())
        write_split_csv(self.report_dir / "split.csv", splits)
        _write_csv(
            self.report_dir / "duplicates.csv",
            [
                {"group": number, "split": split, "file": str(record.path)}
                for split, groups in self.duplicates.within.items()
                for number, group in enumerate(groups)
                for record in group
            ],
        )
        _write_csv(
            self.report_dir / "skipped.csv",
            [{"file": str(r.path), "reason": reason} for r, reason in self.skipped],
        )
        _write_csv(
            self.report_dir / "ignored.csv",
            [{"file": str(path), "reason": reason} for path, reason in self.ignored],
        )

    def _loader(self, split: str, train: bool = False, with_sources: bool = False) -> DataLoader:
        dataset = self._loader_dataset(split, train)
        if with_sources and (sources := self.val_sources):
            position = {name: i for i, name in enumerate(sources)}
            dataset = SourcedDataset(
                dataset,
                [position[source_name(r)] for r in self.split_records[split]],
            )
        world_size = self.trainer.world_size if self.trainer is not None else 1
        if train:
            batch_size = per_process_batch_size(self.batch_size, world_size)
        else:
            batch_size = per_process_batch_size(
                self.eval_batch_size, world_size, "data.eval_batch_size (or data.batch_size)"
            )
        weights = self._sampling_weights(split) if train else None
        options: dict[str, Any] = {
            "batch_size": batch_size,
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.num_workers > 0,
            "drop_last": False,
        }
        if train and world_size == 1:
            epoch, skip = self._resume_at or (self._current_epoch(), 0)
            self._resume_at = None
            sampler = EpochSampler(len(dataset), self.seed, weights, epoch=epoch)
            sampler.resume(epoch, skip * batch_size)
            self._train_sampler = sampler
            return ResumableLoader(dataset, sampler=sampler, **options)
        # Under DDP Lightning replaces or wraps the sampler so each process draws its share (of
        # the weighted sample too; the weights come from the whole training split on every
        # process). Such a loader starts an interrupted epoch again (see README, resume).
        sampler = None
        if weights is not None:
            sampler = WeightedRandomSampler(
                torch.as_tensor(weights, dtype=torch.double),
                num_samples=len(weights),
                replacement=True,
            )
        return DataLoader(dataset, shuffle=train and sampler is None, sampler=sampler, **options)

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
            return XRayDataset(stored.images, stored.labels, stored.indices)
        if train and self.device_augment is not None:
            # uint8 and a seed per image; the hooks below augment the batch on the device.
            return SeededXRayDataset(stored)
        return stored

    def _sampling_weights(self, split: str) -> list[float] | None:
        """Each film's draw weight under ``imbalance=sampler`` (classes drawn equally often)
        and ``source_balance`` (sources drawn in proportion; cxrnet/data/source_balance.py)."""
        balance = self._source_weights()
        if balance is not None:
            sources = [source_of(record) for record in self.split_records[split]]
            labels = self._labels(split)
            return draw_weights(sources, labels, balance, self.imbalance == "sampler")
        if self.imbalance != "sampler":
            return None
        labels = self._labels(split)
        per_class = balanced_class_weights(labels, self.num_classes)
        return [per_class[label] for label in labels]

    def _current_epoch(self) -> int:
        """The epoch Lightning passes to the sampler's set_epoch next."""
        trainer = self.trainer
        return trainer.fit_loop.epoch_progress.current.processed if trainer else 0

    def state_dict(self) -> dict[str, int]:
        """Where training stands (saved in every checkpoint): the epoch and how many of its
        batches are trained, which a resume skips (``data.sampling``)."""
        trainer, sampler = self.trainer, self._train_sampler
        if trainer is None or sampler is None:
            return {}
        progress = trainer.fit_loop.epoch_loop.batch_progress
        if progress.is_last_batch:  # the epoch is over: the next one starts from its beginning
            return {"epoch": sampler.epoch + 1, "batches": 0}
        return {"epoch": sampler.epoch, "batches": progress.current.processed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores this before it asks for any loader (even early, for
        # estimated_stepping_batches): the next training loader starts there.
        if state_dict:
            self._resume_at = (int(state_dict["epoch"]), int(state_dict["batches"]))

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the CPU: each training image's augmentation parameters, drawn from its seed."""
        if isinstance(batch, SeededSample) and self.device_augment is not None:
            return self.device_augment.prepare(batch)
        return batch

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """On the model's device: the training batch warped and scaled to [0, 1] in one call.

        Evaluation batches (already float, never augmented) pass unchanged.
        """
        if not isinstance(batch, DeviceBatch) or self.device_augment is None:
            return batch
        images, labels = self.device_augment.finish(batch)
        if self.trainer is not None:
            # What the precision plugin does to float inputs before the transfer (a cast under
            # "bf16-true"/"16-true"), which these images were not yet when it ran.
            images = self.trainer.precision_plugin.convert_input(images)
        return images, labels

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


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows``; an empty report is not written, so a file's presence means findings."""
    if not rows:
        return
    with path.open("w", newline="", encoding="utf-8", errors=PATH_ERRORS) as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _warn_shared_source_names(roots: Sequence[Path]) -> None:
    """Unnamed roots are told apart by folder name or manifest stem: two roots of one name (two
    sites' ``chest_xray`` folders) would count, split and report as one source."""
    by_name: dict[str, list[str]] = {}
    for root in roots:
        by_name.setdefault(unnamed_source(root), []).append(str(root))
    for name, shared in by_name.items():
        if len(shared) > 1:
            log.warning(
                "data.root lists %d roots that all become source %r (%s): name them with "
                "data.sources={<name>: <root>, ...} to keep them apart",
                len(shared),
                name,
                ", ".join(shared),
            )
