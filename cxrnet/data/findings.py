"""The findings a film can have, under one naming every source maps onto (``data.task=findings``).

Each source labels only some findings: the Guangzhou pediatric films label pneumonia (and a
NORMAL film has no finding at all), ``rsna_adult`` labels pneumonia and "some other finding"
(OTHER_ABNORMAL), NIH, CheXpert and the other public sets their own lists (the readers of
``cxrnet.data.public`` map their names onto these). A film's findings are what its source
says of it; every finding it says nothing of is *unlabelled* and masked out of the loss and the
metrics, never taken for a negative.

A finding's value is 1 (present), 0 (absent) or -1 (uncertain, as CheXpert and MIMIC write it);
``uncertain`` chooses what an uncertain label becomes (the CheXpert paper's U-Ignore, U-Ones and
U-Zeros). Targets are float vectors, NaN where a film's finding is unlabelled.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cxrnet.data.records import DEVICE_FINDINGS, Record
from cxrnet.user_errors import DataError

# The findings of the public adult sets (NIH ChestX-ray14, CheXpert/MIMIC-CXR, RSNA, VinDr) under
# one spelling; ``other_finding`` is "abnormal, not one of the findings this source names"
# (RSNA's "No Lung Opacity / Not Normal").
FINDINGS: tuple[str, ...] = (
    "pneumonia",
    "atelectasis",
    "cardiomegaly",
    "consolidation",
    "edema",
    "effusion",
    "emphysema",
    "enlarged_cardiomediastinum",
    "fibrosis",
    "fracture",
    "hernia",
    "infiltration",
    "lung_lesion",
    "lung_opacity",
    "mass",
    "nodule",
    "pleural_other",
    "pleural_thickening",
    "pneumothorax",
    "support_devices",
    "other_finding",
)
TRIAGE_FINDING = "pneumonia"
POSITIVE, NEGATIVE, UNCERTAIN = 1.0, 0.0, -1.0
Uncertain = Literal["ignore", "positive", "negative"]
UNCERTAIN_POLICIES: tuple[str, ...] = ("ignore", "positive", "negative")
# The class a folder or a manifest label names, as findings: NORMAL is no finding at all (every
# finding absent), PNEUMONIA says nothing of the other findings, OTHER_ABNORMAL is abnormal
# without pneumonia. These are the classes the findings task trains on.
NO_FINDING = "NORMAL"
CLASS_FINDINGS: Mapping[str, Mapping[str, float]] = {
    "PNEUMONIA": {"pneumonia": POSITIVE},
    "OTHER_ABNORMAL": {"pneumonia": NEGATIVE, "other_finding": POSITIVE},
}
# A manifest's findings column: "effusion|mass" (present), "mass=0|nodule=-1" (absent, uncertain).
FINDINGS_COLUMN = "findings"
_ENTRY = re.compile(r"^(?P<name>[a-z][a-z0-9_]*)(?:=(?P<value>1|0|-1|1\.0|0\.0|-1\.0|u))?$")
_VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "u": -1.0}


def triage_output(findings: Sequence[str]) -> int | None:
    """Which output of a findings model is the triage finding's (pneumonia, which every findings
    model learns: ``resolve_findings``); None for a class model (no findings)."""
    return list(findings).index(TRIAGE_FINDING) if findings else None


def check_finding_names(names: Iterable[str], where: str) -> tuple[str, ...]:
    """``names`` if each is one of ``FINDINGS`` (no repeats), else a ``DataError`` naming it."""
    names = tuple(str(name) for name in names)
    unknown = [name for name in names if name not in FINDINGS]
    if unknown:
        raise DataError(
            f"{where}: unknown finding(s) {unknown}; cxrnet's findings are {list(FINDINGS)}"
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DataError(f"{where}: finding(s) {repeated} listed more than once")
    return names


def parse_findings_cell(cell: str) -> tuple[dict[str, float], list[str]]:
    """A manifest's findings cell as {finding: value}, and its problems (for the row's line)."""
    values: dict[str, float] = {}
    problems: list[str] = []
    for raw in (part.strip() for part in cell.split("|")):
        if not raw:
            continue
        match = _ENTRY.match(raw.lower().replace(" ", "_"))
        if match is None:
            problems.append(
                f"findings entry {raw!r} is not <finding>, <finding>=1, =0 or =-1 (uncertain)"
            )
            continue
        name = match["name"]
        if name not in FINDINGS:
            problems.append(f"finding {name!r} is not one of cxrnet's findings {list(FINDINGS)}")
        elif name in values:
            problems.append(f"finding {name!r} is given twice")
        else:
            values[name] = _VALUES[match["value"] or "1"]
    return values, problems


def class_findings(class_name: str) -> dict[str, float] | None:
    """What a class label says of the film's findings; None for ``NORMAL`` (no finding at all:
    every finding absent) and for a class the findings task does not know."""
    known = CLASS_FINDINGS.get(class_name.upper())
    return None if known is None else dict(known)


def film_findings(
    class_name: str, given: Mapping[str, float] | None = None
) -> tuple[tuple[str, float], ...]:
    """A film's labelled findings: its class's (``CLASS_FINDINGS``), then what its manifest says
    (which wins), as sorted pairs for a frozen record. A NORMAL film stores none: it is absent
    of every finding (``targets``) unless its manifest says otherwise."""
    values = class_findings(class_name) or {}
    values.update(given or {})
    return tuple(sorted(values.items()))


def findings_contradict_class(class_name: str, values: Mapping[str, float]) -> str | None:
    """Why a manifest's findings contradict the row's class label, or None."""
    positives = sorted(
        name for name, value in values.items() if value == POSITIVE and name not in DEVICE_FINDINGS
    )
    if class_name.upper() == NO_FINDING and positives:
        return f"a NORMAL film cannot have the finding(s) {positives}"
    if class_name.upper() == "PNEUMONIA" and values.get("pneumonia", POSITIVE) != POSITIVE:
        return "a PNEUMONIA film's pneumonia finding must be 1"
    return None


def targets(
    labelled: Mapping[str, float], normal: bool, findings: Sequence[str], uncertain: Uncertain
) -> np.ndarray:
    """One film's target vector over ``findings``: 1, 0, or NaN where unlabelled (masked).

    ``normal``: a NORMAL film, absent of every finding its findings do not name.
    """
    row = np.full(len(findings), np.nan, dtype=np.float32)
    for i, name in enumerate(findings):
        value = labelled.get(name, NEGATIVE if normal else math.nan)
        if value == UNCERTAIN:
            value = {"ignore": math.nan, "positive": POSITIVE, "negative": NEGATIVE}[uncertain]
        row[i] = value
    return row


def default_findings(labelled: Iterable[Mapping[str, float]]) -> tuple[str, ...]:
    """The findings some film labels present, in ``FINDINGS`` order: what a model can learn from
    these films (``data.findings=null``)."""
    present = {name for values in labelled for name, value in values.items() if value == POSITIVE}
    return tuple(name for name in FINDINGS if name in present)


def positive_weights(target_rows: np.ndarray) -> np.ndarray:
    """Per finding, the weights of its negative and positive films (F, 2) that balance them, as
    ``balanced_class_weights`` does per class: n / (2 n_c) over the films labelling it. A finding
    no training film labels both ways gets (1, 1); the data module refuses training on it."""
    weights = np.ones((target_rows.shape[1], 2), dtype=np.float64)
    for j in range(target_rows.shape[1]):
        column = target_rows[:, j]
        column = column[~np.isnan(column)]
        positives = int((column == POSITIVE).sum())
        negatives = int((column == NEGATIVE).sum())
        if positives and negatives:
            total = positives + negatives
            weights[j] = (total / (2 * negatives), total / (2 * positives))
    return weights


@dataclass
class FindingTargets:
    """What a data module's target rows hold (``data.task=findings``): the findings, fixed when
    the films are read (``resolve``; a model scoring other data sets them first, ``use``), and
    what an uncertain label becomes."""

    names: tuple[str, ...] | None
    uncertain: Uncertain

    def use(self, names: Sequence[str]) -> None:
        self.names = check_finding_names(names, "the model's findings")

    def resolve(self, splits: Mapping[str, Sequence[Record]]) -> None:
        self.names = resolve_findings(self.names, splits, self.uncertain)

    def rows(self, records: Sequence[Record]) -> np.ndarray:
        """The films' target rows (N, F): 1, 0, NaN where unlabelled."""
        names = self.names or ()
        rows = [targets(r.finding_values, r.is_normal, names, self.uncertain) for r in records]
        return np.stack(rows) if rows else np.zeros((0, len(names)), dtype=np.float32)


def resolve_findings(
    chosen: Sequence[str] | None, splits: Mapping[str, Sequence[Record]], uncertain: Uncertain
) -> tuple[str, ...]:
    """``data.findings``, or (None) the findings some training film has; each must have both
    present and absent training films, or its loss and AUROC mean nothing: a ``DataError``
    naming it and its counts. Data without training films (scored by a model) takes ``chosen``
    as it is."""
    train = splits.get("train", [])
    if chosen is None:
        chosen = default_findings(record.finding_values for record in train)
        if not chosen:
            raise DataError(
                "data.task=findings with data.findings=null learns the findings the training "
                f"films have, and none of the {len(train)} has one: give PNEUMONIA (or "
                "OTHER_ABNORMAL) films, a findings column, or set data.findings"
            )
    if TRIAGE_FINDING not in chosen:
        raise DataError(
            f"data.findings={list(chosen)} lacks {TRIAGE_FINDING}: its output is the triage "
            "decision (the report's operating point, cxrnet-predict's prediction column); add it"
        )
    if not train:
        return tuple(chosen)
    rows = np.stack([targets(r.finding_values, r.is_normal, chosen, uncertain) for r in train])
    lacking = []
    for j, name in enumerate(chosen):
        present, absent = int((rows[:, j] == POSITIVE).sum()), int((rows[:, j] == NEGATIVE).sum())
        if not present or not absent:
            lacking.append(f"{name} ({present} present, {absent} absent)")
    if lacking:
        raise DataError(
            f"data.findings: no training film labels {', '.join(lacking)} both ways, so the "
            "model cannot learn it: leave it out of data.findings, or add films that label it"
        )
    return tuple(chosen)
