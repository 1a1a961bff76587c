"""The recipe studies: for each question, the variants it compares as ``cxrnet-train`` overrides.

Every variant runs on top of ``experiment=studies/cv_study`` (the seed recipe at 64 px, 5
patient-grouped folds of train+val, a fixed patient-grouped held-out set) and sweeps
``data.fold=0,...,4``. The ``baseline`` variant is the seed recipe itself; each study is read
against it, fold by fold.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: tuple[str, ...]
    seeds: tuple[int, ...] = (0,)
    note: str = ""


@dataclass(frozen=True)
class Study:
    name: str
    question: str
    variants: tuple[Variant, ...]


# Three seeds for the anchor: its seed-to-seed spread is the noise every other variant is read
# against, and the operating-point study needs thresholds across seeds as well as folds.
BASELINE = Variant("baseline", (), seeds=(0, 1, 2), note="the seed recipe at 64 px")

STUDIES: dict[str, Study] = {
    study.name: study
    for study in (
        Study("baseline", "the seed recipe, 3 seeds", (BASELINE,)),
        Study(
            "input",
            "input resolution and contrast: 64 vs 128 px, histogram equalization, CLAHE",
            (
                Variant("size128", ("data.image_size=128",), note="4x the pixels"),
                Variant("equalize", ("data.equalize=hist",), note="global histogram equalization"),
                Variant("clahe", ("data.equalize=clahe",), note="CLAHE, clip 2, 8x8 tiles"),
            ),
        ),
        Study(
            "recipe",
            "schedule, optimizer, label smoothing and augmentation",
            (
                Variant(
                    "cosine12",
                    ("trainer.max_epochs=12", "model/scheduler=cosine"),
                    note="12 epochs, cosine decay",
                ),
                Variant(
                    "adamw",
                    ("model/optimizer=adamw", "model.optimizer.weight_decay=0.05"),
                    note="AdamW, weight decay 0.05",
                ),
                Variant("smooth", ("model.label_smoothing=0.1",), note="label smoothing 0.1"),
                Variant("aug_half", ("data.augment.strength=0.5",), note="half the augmentation"),
                Variant("no_flip", ("data.augment.hflip=false",), note="no horizontal flip"),
            ),
        ),
        Study(
            "imbalance",
            "class weights vs weighted sampler vs nothing, each at the validation threshold",
            (
                Variant("sampler", ("data.imbalance=sampler",), note="weighted sampler"),
                Variant("none", ("data.imbalance=none",), note="no correction"),
            ),
        ),
        Study(
            "networks",
            "the seed CNN against a wider one and torchvision networks, all from scratch",
            (
                Variant(
                    "wider",
                    ("model.net.widths=[64,64,128,128]", "model.net.hidden=256"),
                    note="seed CNN, twice the channels",
                ),
                Variant(
                    "mobilenet_v3_small",
                    ("model/net=mobilenet_v3_small",),
                    note="MobileNetV3-Small, one-channel stem",
                ),
                Variant("resnet18", ("model/net=resnet18",), note="ResNet-18, one-channel stem"),
            ),
        ),
    )
}


def variants_of(names: list[str]) -> list[tuple[Study, Variant]]:
    """The (study, variant) pairs of the named studies, in order; an unknown name is an error."""
    unknown = [name for name in names if name not in STUDIES]
    if unknown:
        raise SystemExit(f"unknown study {unknown}; choose from {sorted(STUDIES)}")
    return [(STUDIES[name], variant) for name in names for variant in STUDIES[name].variants]
