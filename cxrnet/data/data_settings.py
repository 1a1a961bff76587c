"""The data module's settings (the flat ``data.*`` keys), checked and normalised once.

``ChestXRayDataModule`` keeps its flat keyword arguments (Hydra instantiates ``data.*`` with
them, and checkpoints store them to rebuild the same data); ``DataSettings.from_arguments``
turns them into one frozen object before any film is found or decoded, and into the
hyperparameters a checkpoint stores: the sources as absolute paths, mappings as plain data,
so the checkpoint's data settings work from any folder and load with ``weights_only=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from cxrnet.data.augment_settings import check_augment
from cxrnet.data.decode import DecodeParams
from cxrnet.data.findings import UNCERTAIN_POLICIES, Uncertain, check_finding_names
from cxrnet.data.public.formats import PublicSource, public_source
from cxrnet.data.source_balance import check_source_balance
from cxrnet.data.sources import named_sources, train_only_sources, unnamed_source
from cxrnet.data.splits import SplitConfig
from cxrnet.plain_data import plain_data
from cxrnet.user_errors import DataError

log = logging.getLogger("cxrnet.data.datamodule")

Imbalance = Literal["class_weight", "sampler", "none"]
Task = Literal["binary", "subtype", "findings"]


@dataclass(frozen=True)
class DataSettings:
    """What the data module reads, splits, decodes and serves; validated on construction by
    ``from_arguments``. The worker counts and ``pin_memory`` stay as given: what ``auto``
    becomes depends on the machine the module runs on.

    ``root`` is a folder (nested layouts too), a CSV manifest, or a list of either, combined;
    ``sources`` names each folder or manifest instead (``data.sources``): every film carries its
    source (metadata ``source``; from an unnamed root, its folder name or manifest stem unless
    the manifest has a source column). ``source_roles`` makes sources training-only
    (``SplitConfig.train_only_sources``); ``source_balance`` sets how often the training draw
    takes each source (cxrnet/data/source_balance.py); ``source_train_size`` keeps about N (or
    a fraction) of a source's training films (``SplitConfig.source_train_size``); the rest,
    ``unused``, are counted and written to split.csv but never decoded, trained or scored.
    ``augment`` holds the recipe (``build_train_transform``'s arguments) and ``on_device``:
    when true, training batches travel as uint8 and are augmented on the model's device
    (``data.batch_augment``, in the batch-transfer hooks) instead of on the loader workers.
    ``unsplit`` is where films that name no split go: ``train`` (training data, re-split by
    ``split``) or ``test`` (an external site's labelled films: ``cxrnet-eval data.root=...``).
    A val split with fewer than ``min_val_per_class`` films of a class warns when training
    starts: the checkpoint and the threshold chosen on it would be noise. ``keep_in_val``:
    source splits whose films always go to val in a re-split (``SplitConfig.keep_in_val``).
    ``verify_files=False`` trusts the image cache's index for a listing it was built for, so a
    warm start stats no film (``cxrnet.data.cache_listing`` says what that trusts).
    """

    sources: tuple[Path, ...]
    source_names: tuple[str | None, ...]
    # Per source: the public dataset it is (cxrnet.data.public), None for a folder or manifest.
    public_sources: tuple[PublicSource | None, ...]
    split: SplitConfig
    decode: DecodeParams
    batch_size: int
    eval_batch_size: int
    imbalance: Imbalance
    task: Task
    # data.task=findings: the findings to learn (None: every finding some training film has)
    # and what an uncertain label becomes (cxrnet.data.findings).
    findings: tuple[str, ...] | None
    uncertain: Uncertain
    augment: Mapping[str, Any]  # build_train_transform's arguments (on_device taken out)
    augment_on_device: bool
    source_balance: str | Mapping[str, float]
    other_classes: Literal["error", "ignore"]
    allow_cross_split_duplicates: bool
    cache_dir: Path | None
    on_bad_image: Literal["error", "skip"]
    seed: int
    unsplit: Literal["train", "test"]
    min_val_per_class: int
    verify_files: bool
    num_workers: int | str
    decode_workers: int | str
    pin_memory: bool | None

    def label_policies(self) -> list[str]:
        """How each public dataset among the sources maps its labels (the model card's)."""
        return [
            f"{name}: {public.policy.describe()}; uncertain labels: data.uncertain="
            f"{self.uncertain}; views: {public.views}"
            for name, public in zip(self.source_names, self.public_sources, strict=True)
            if public is not None
        ]

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> tuple[DataSettings, dict[str, Any]]:
        """The settings from the data module's keyword arguments, and the arguments as a
        checkpoint stores them (normalised; ``report_dir``, this run's folder, left out)."""
        values = dict(arguments)
        _check_choices(values)
        sources, names, publics = _resolve_sources(values)
        values["source_roles"] = plain_data(values["source_roles"] or {})
        if values["source_train_size"] is not None:
            values["source_train_size"] = plain_data(values["source_train_size"])
        balance = values["source_balance"]
        values["source_balance"] = plain_data(balance) if balance is not None else "none"
        check_source_balance(values["source_balance"])
        values["augment"] = plain_data(values["augment"] or {})
        check_augment(values["augment"])
        values["keep_in_val"] = [str(name) for name in values["keep_in_val"] or ()]
        cache_dir = values["cache_dir"]
        values["cache_dir"] = str(Path(cache_dir).expanduser().absolute()) if cache_dir else None
        findings = values["findings"]
        if findings is not None:
            findings = check_finding_names(plain_data(findings), "data.findings")
            values["findings"] = list(findings)
        augment = dict(values["augment"])
        on_device = bool(augment.pop("on_device", False))
        settings = cls(
            sources=sources,
            source_names=names,
            public_sources=publics,
            split=SplitConfig(
                values["split"],
                values["val_fraction"],
                values["num_folds"],
                values["fold"],
                values["holdout_fraction"],
                values["split_seed"],
                values["holdout_seed"],
                tuple(values["keep_in_val"]),
                train_only_sources(values["source_roles"]),
                source_train_size=values["source_train_size"],
            ),
            decode=DecodeParams(
                values["image_size"],
                values["resize"],
                values["equalize"],
                values["interpolation"],
                values["dicom_window"],
            ),
            batch_size=values["batch_size"],
            eval_batch_size=values["eval_batch_size"] or values["batch_size"],
            imbalance=values["imbalance"],
            task=values["task"],
            findings=findings,
            uncertain=values["uncertain"],
            augment=augment,
            augment_on_device=on_device,
            source_balance=values["source_balance"],
            other_classes=values["other_classes"],
            allow_cross_split_duplicates=values["allow_cross_split_duplicates"],
            cache_dir=Path(values["cache_dir"]) if values["cache_dir"] else None,
            on_bad_image=values["on_bad_image"],
            seed=values["seed"],
            unsplit=values["unsplit"],
            min_val_per_class=values["min_val_per_class"],
            verify_files=values["verify_files"],
            num_workers=values["num_workers"],
            decode_workers=values["decode_workers"],
            pin_memory=values["pin_memory"],
        )
        values.pop("report_dir", None)
        return settings, values


def _check_choices(values: Mapping[str, Any]) -> None:
    if values["imbalance"] not in ("class_weight", "sampler", "none"):
        raise ValueError(
            f"imbalance must be 'class_weight', 'sampler' or 'none', got {values['imbalance']!r}"
        )
    if values["task"] not in ("binary", "subtype", "findings"):
        raise ValueError(f"task must be 'binary', 'subtype' or 'findings', got {values['task']!r}")
    if values["uncertain"] not in UNCERTAIN_POLICIES:
        raise DataError(
            f"data.uncertain={values['uncertain']!r}: choose ignore (an uncertain label is "
            "masked like an unlabelled one), positive or negative"
        )
    if values["batch_size"] < 1:
        raise ValueError(f"batch_size must be >= 1, got {values['batch_size']}")
    if values["unsplit"] not in ("train", "test"):
        raise ValueError(f"unsplit must be 'train' or 'test', got {values['unsplit']!r}")
    if values["other_classes"] not in ("error", "ignore"):
        raise DataError(
            f"data.other_classes={values['other_classes']!r}: choose error (a manifest row of "
            "another class than NORMAL/PNEUMONIA stops the run, naming its line) or ignore "
            "(such films are listed in ignored.csv, never trained, validated or tested)"
        )


def _resolve_sources(
    values: dict[str, Any],
) -> tuple[tuple[Path, ...], tuple[str | None, ...], tuple[PublicSource | None, ...]]:
    """Every source as an absolute path with its name (None for an unnamed root) and the public
    dataset it is (None for a folder or manifest); ``values``' ``root`` or ``sources`` rewritten
    as a checkpoint stores them."""
    root, sources = values["root"], values["sources"]
    if sources and root:
        raise DataError(
            f"data.root={root} and data.sources are both set; set one: data.root=null to "
            "use the named sources, or data.sources=null"
        )
    if not sources and not root:
        raise DataError("no data given: set data.root or data.sources")
    if sources:
        given = plain_data(sources)
        named = named_sources(given)
        publics = {name: public_source(name, given[name]) for name in named}
        values["sources"] = {
            name: public.as_setting() if (public := publics[name]) else str(path)
            for name, path in named.items()
        }
        return tuple(named.values()), tuple(named), tuple(publics.values())
    # Any sequence of roots (a Hydra ListConfig too), or one folder or manifest.
    single = isinstance(root, (str, Path))
    paths = tuple(Path(source).expanduser().absolute() for source in ([root] if single else root))
    values["root"] = str(paths[0]) if single else [str(path) for path in paths]
    _warn_shared_source_names(paths)
    return paths, (None,) * len(paths), (None,) * len(paths)


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
