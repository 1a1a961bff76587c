"""How often the training draw takes each source (``data.source_balance``).

The invariant, over the weighted draw of an epoch (``EpochSampler``, or Lightning's wrapper of
the same weights under DDP): the expected fraction of draws from source ``s`` is its normalised
weight ``w_s / sum(w)``, whatever its number of films; within a source the films are drawn as
today's sampler draws them, uniformly (``class_correction`` off), or each of the source's classes
equally often (``data.imbalance=sampler``: the class correction computed within the source).

Per film: ``w_s / |films of s|``, times ``n_s / (k_s * n_{s,c})`` with the class correction,
where ``k_s`` is the number of classes the source has (a site without normal films is drawn for
its pneumonia films, not refused).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cxrnet.user_errors import DataError

_MODES = ("none", "equal")


def check_source_balance(setting: Any) -> None:
    """The setting's form (none, equal or a mapping), before any film is found."""
    if setting is None or setting in _MODES or isinstance(setting, Mapping):
        return
    raise DataError(
        f"data.source_balance must be none, equal, or a weight per source "
        f"(data.source_balance={{kermany: 1, site: 3}}); got {setting!r}"
    )


def source_weights(setting: Any, sources: Sequence[str]) -> dict[str, float] | None:
    """The normalised weight of each training source (one per film in ``sources``), or None
    for ``none`` (today's draw). ``setting`` is none, equal, or a weight per source name."""
    present = sorted(set(sources))
    if setting is None or setting == "none":
        return None
    check_source_balance(setting)
    if not present:
        raise DataError("data.source_balance: there are no training films to balance")
    if setting == "equal":
        return {name: 1.0 / len(present) for name in present}
    given = {str(name): weight for name, weight in setting.items()}
    unknown = sorted(set(given) - set(present))
    if unknown:
        raise DataError(
            f"data.source_balance names source(s) {unknown} that no training film comes from; "
            f"the training sources are {present}"
        )
    missing = sorted(set(present) - set(given))
    if missing:
        raise DataError(
            f"data.source_balance gives no weight to the training source(s) {missing}; give "
            "each training source a weight (0 leaves its films out of the draw)"
        )
    for name, weight in given.items():
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
            raise DataError(
                f"data.source_balance.{name}={weight!r} must be a number >= 0 (a relative weight)"
            )
    total = float(sum(given.values()))
    if total <= 0:
        raise DataError(f"data.source_balance={given}: at least one weight must be above 0")
    return {name: float(weight) / total for name, weight in sorted(given.items())}


def draw_weights(
    sources: Sequence[str],
    labels: Sequence[int],
    weights: Mapping[str, float],
    class_correction: bool,
) -> list[float]:
    """Each film's draw weight under the invariant above (they sum to 1)."""
    films = Counter(sources)
    per_class = Counter(zip(sources, (int(label) for label in labels), strict=True))
    classes = Counter(source for source, _ in per_class)
    out = []
    for source, label in zip(sources, labels, strict=True):
        if class_correction:
            out.append(weights[source] / (classes[source] * per_class[(source, int(label))]))
        else:
            out.append(weights[source] / films[source])
    return out


def drawn_class_weights(
    sources: Sequence[str], labels: Sequence[int], weights: Mapping[str, float], num_classes: int
) -> list[float]:
    """The loss's 'balanced' class weights for the classes the source-balanced draw shows the
    model: ``1 / (k * p_c)`` with ``p_c`` the expected fraction of class ``c`` among the draws
    (without source balance this is ``n / (k * n_c)``, ``balanced_class_weights``)."""
    drawn = np.zeros(num_classes)
    for weight, label in zip(draw_weights(sources, labels, weights, False), labels, strict=True):
        drawn[int(label)] += weight
    missing = [i for i, p in enumerate(drawn) if p <= 0]
    if missing:
        raise DataError(
            f"the source-balanced draw (data.source_balance) never shows class index {missing}: "
            "the sources with weight above 0 have no such training films; cannot weight"
        )
    return [float(1.0 / (num_classes * p)) for p in drawn]
