"""One label policy for every public dataset: how its labels become cxrnet's findings, and which
films are NORMAL, PNEUMONIA or OTHER_ABNORMAL for the binary task.

Every reader turns a film's labels into values of ``cxrnet.data.findings.FINDINGS`` (1 present,
0 absent, -1 uncertain; a finding the dataset does not label is left out, so it stays masked)
and says whether the dataset calls the film normal ("No Finding"). From those, one rule for all
datasets (``film_class``):

- **PNEUMONIA**: the dataset's pneumonia label is present (an uncertain one only under
  ``data.uncertain=positive``).
- **OTHER_ABNORMAL**: some other finding present (support devices aside: a tube is not a
  disease) and pneumonia absent, or not mentioned where the labels come from reports that would
  have mentioned it (CheXpert, MIMIC: ``unmentioned_absent``). Scored as its own group by the
  binary task, trained on by ``data.task=findings``.
- **NORMAL**: the dataset says no finding, and nothing contradicts it.
- Left out, with the reason: pneumonia uncertain under ``data.uncertain=ignore``; abnormal
  films of a dataset that does not label pneumonia; films whose labels say neither normal nor
  any present finding (only uncertain ones, or readers who disagree).

Each dataset's own names, and what its reader decides beyond this rule, are in its ``POLICY``
(printed by the model card, tabulated in docs/datasets.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cxrnet.data.findings import NEGATIVE, POSITIVE, TRIAGE_FINDING, UNCERTAIN, Uncertain
from cxrnet.data.records import CLASS_NAMES, DEVICE_FINDINGS, OTHER_ABNORMAL

NORMAL, PNEUMONIA = CLASS_NAMES


@dataclass(frozen=True)
class LabelPolicy:
    """How one dataset's labels map onto cxrnet's: its label per finding, its "no finding"
    label, and what else its reader decides (uncertain values, several readers, views)."""

    dataset: str
    findings: Mapping[str, str]  # the dataset's label -> cxrnet's finding
    normal: str  # the dataset's label for a film without findings
    notes: str = ""
    # Whether a finding the film's labels leave blank was simply not mentioned in its report
    # (CheXpert, MIMIC): pneumonia blank on an abnormal film then makes it OTHER_ABNORMAL.
    # Otherwise such a film is left out of the binary task: its pneumonia is unknown.
    unmentioned_absent: bool = False
    # The label files its reader may read (each also .gz or .zip): a listing kept from an
    # earlier start is trusted only while these are as they were (``listing_cache``).
    files: tuple[str, ...] = ()
    # Who or what labelled the films, and where they come from: the model card's limits.
    labelled: str = ""

    @property
    def pneumonia(self) -> str:
        """The dataset's label that makes a film PNEUMONIA."""
        return next(label for label, name in self.findings.items() if name == TRIAGE_FINDING)

    def describe(self) -> str:
        """One line for the model card: the pneumonia and normal labels and the rest."""
        text = (
            f"{self.dataset}: PNEUMONIA = {self.pneumonia!r} present; NORMAL = {self.normal!r}; "
            "any other finding present = OTHER_ABNORMAL"
        )
        return f"{text}; {self.notes}" if self.notes else text


@dataclass(frozen=True)
class PublicFilm:
    """One film as a reader found it, before the policy and the task decide what it is."""

    path: Path
    patient: str
    split: str  # the dataset's own split (train, val or test); train where it has none
    values: Mapping[str, float]  # cxrnet finding -> 1, 0 or -1, as the dataset labels it
    normal: bool  # the dataset says the film has no finding
    metadata: Mapping[str, str] = field(default_factory=dict)  # view, age, sex, study, boxes
    frontal: bool = True  # a PA or AP film; lateral ones are read only when asked (views=all)


@dataclass(frozen=True)
class Skipped:
    """A film the dataset lists that its labels leave out, with the reason (it is listed in
    ignored.csv like every file a run does not use)."""

    path: Path
    reason: str


def is_abnormal(values: Mapping[str, float]) -> bool:
    """Some finding present, support devices aside."""
    if POSITIVE not in values.values():  # most films: one scan in C
        return False
    return any(v == POSITIVE for name, v in values.items() if name not in DEVICE_FINDINGS)


def film_class(
    policy: LabelPolicy, values: Mapping[str, float], normal: bool, uncertain: Uncertain
) -> str | None:
    """NORMAL, PNEUMONIA or OTHER_ABNORMAL under the one rule above; None when the film is
    left out of the binary task (``left_out_reason`` says why)."""
    pneumonia = values.get(TRIAGE_FINDING)
    if pneumonia == UNCERTAIN:
        pneumonia = {"ignore": None, "positive": POSITIVE, "negative": NEGATIVE}[uncertain]
        if pneumonia is None:
            return None
    if pneumonia == POSITIVE:
        return PNEUMONIA
    if is_abnormal(values):
        # Abnormal without pneumonia, if the film's labels say pneumonia is absent (or the
        # dataset's reports would have mentioned it).
        return OTHER_ABNORMAL if pneumonia == NEGATIVE or policy.unmentioned_absent else None
    if normal:
        return NORMAL
    return None


def left_out_reason(policy: LabelPolicy, values: Mapping[str, float], uncertain: Uncertain) -> str:
    """Why ``film_class`` left a film out."""
    if values.get(TRIAGE_FINDING) == UNCERTAIN and uncertain == "ignore":
        return (
            "pneumonia uncertain (data.uncertain=ignore leaves it out; positive or negative "
            "would count it)"
        )
    if is_abnormal(values) and TRIAGE_FINDING not in values:
        return f"abnormal, and {policy.dataset} does not say whether it has pneumonia"
    return f"{policy.dataset} labels it neither normal nor with any present finding"
