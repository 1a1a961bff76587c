"""The study's arms: each a recipe (``cxrnet-train`` overrides) and the films it trains on.

Kinds of arm:

- ``pediatric``: trained once on the pediatric training films (``peds``), scored on every adult
  film by ``cxrnet-eval`` (the external validation a site would run first);
- ``joint``: the pediatric films (training only, ``data.source_roles={peds: train}``) plus the
  adult training films of fold k; checkpoint and threshold chosen on fold k's adult films;
- ``adult``: the adult training films of fold k alone, from scratch;
- ``finetune``: ``experiment=finetune`` from the pediatric ``best`` model on the adult training
  films of fold k.

Every fold arm runs on the same 5 patient-grouped folds of ``adult.csv`` and is scored on the
pediatric held-out films (``peds_test``) as its test split. ``adult`` is the number of adult
training films per fold (``data.source_train_size``); None: all of them (about 333).
"""

from __future__ import annotations

from dataclasses import dataclass

LEARNING_CURVE = (0, 25, 50, 100, 200, None)
# "A few adult films": the size at which the recipe variants are compared.
FEW = 100
# The adult training sets are small (25-333 films, 1-11 steps an epoch): the arms that train on
# them alone run 30 epochs (still fewer weight updates than 6 joint epochs on ~4,300 films) and
# keep the best epoch on the fold's val films, as every arm does.
SMALL_DATA_EPOCHS = 30


@dataclass(frozen=True)
class Arm:
    name: str
    group: str
    kind: str  # pediatric | joint | adult | finetune
    adult: int | None = None
    overrides: tuple[str, ...] = ()
    experiment: str = "best"
    note: str = ""
    # What the fold's other four OTHER_ABNORMAL groups are in training: "" (not used),
    # "negatives" (labelled NORMAL) or "findings" (their own class, data.task=findings).
    others: str = ""

    @property
    def folds(self) -> bool:
        return self.kind != "pediatric"


def _size(n: int | None) -> str:
    return "all" if n is None else str(n)


def _curve(kind: str, sizes: tuple[int | None, ...], note: str) -> tuple[Arm, ...]:
    experiment = "finetune" if kind == "finetune" else "best"
    return tuple(
        Arm(f"{kind}_{_size(n)}", "curve", kind, n, experiment=experiment, note=note) for n in sizes
    )


def _variant(name: str, overrides: tuple[str, ...], note: str) -> Arm:
    return Arm(f"few_{name}", "variants", "joint", FEW, overrides, note=note)


ARMS: tuple[Arm, ...] = (
    Arm("peds_seed", "pediatric", "pediatric", experiment="notebook_baseline",
        note="the seed notebook's recipe (150 px, official 16-film val)"),
    Arm("peds_best", "pediatric", "pediatric", note="experiment=best (64 px)"),
    *_curve("joint", LEARNING_CURVE, "pediatric + adult films"),
    *_curve("adult", LEARNING_CURVE[1:], "adult films only"),
    *_curve("finetune", LEARNING_CURVE[1:], "fine-tuned from peds_best"),
    _variant(
        "intensity",
        ("data.augment.brightness=0.2", "data.augment.contrast=0.2", "data.augment.gamma=0.2"),
        "brightness, contrast and gamma augmentation (0.2 each)",
    ),
    _variant("hist", ("data.equalize=hist",), "histogram equalization"),
    _variant("clahe", ("data.equalize=clahe",), "CLAHE"),
    _variant("size128", ("data.image_size=128",), "128 px"),
    _variant("balance", ("data.source_balance=equal",), "sources drawn equally often"),
    _variant("resnet18", ("model/net=resnet18",), "ResNet-18 from scratch"),
    _variant("mobilenet", ("model/net=mobilenet_v3_small",), "MobileNetV3-Small from scratch"),
    Arm("few_negatives", "variants", "joint", FEW, note="OTHER_ABNORMAL films as negatives",
        others="negatives"),
    # Issue 28: every finding the films label, as separate outputs (pneumonia, other_finding).
    Arm("findings_all", "findings", "joint", None, ("data.task=findings",),
        note="findings model (pneumonia, other_finding), every adult film",
        others="findings"),
    Arm("findings_clahe", "findings", "joint", None, ("data.task=findings", "data.equalize=clahe"),
        note="the findings model with CLAHE", others="findings"),
    Arm("findings_balance", "findings", "joint", None,
        ("data.task=findings", "data.source_balance=equal"),
        note="the findings model, its three sources drawn equally often", others="findings"),
    Arm("findings_128", "findings", "joint", None, ("data.task=findings", "data.image_size=128"),
        note="the findings model at 128 px", others="findings"),
)  # fmt: skip

BY_NAME = {arm.name: arm for arm in ARMS}

# The arm experiment=adult was chosen from (conf/experiment/adult.yaml gives the evidence);
# tests/project/test_adult_transfer_study.py checks the two agree setting by setting.
CHOSEN = "joint_all"
