"""A fold ensemble on disk: its manifest, ``ensemble.json``.

The manifest names the member checkpoints relative to itself (a moved or copied sweep folder
still loads), the combination rule, the operating point with its criterion, the preprocessing
every member shares and the recipe that trained them. ``cxrnet-ensemble``
(``cxrnet.passes.ensemble_folder``) writes it; ``cxrnet-predict`` and ``cxrnet-export`` load it
(``cxrnet.inference.ensemble``) wherever they take a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.publish import write_json_atomic
from cxrnet.user_errors import EnsembleError

MANIFEST_NAME = "ensemble.json"
MANIFEST_KIND = "cxrnet-ensemble"
# The only rule so far: the mean of the members' pneumonia probabilities (not of their logits,
# so a single over-confident member cannot dominate the call).
MEAN_PROBABILITY = "mean_probability"


@dataclass(frozen=True)
class EnsembleManifest:
    """What ``ensemble.json`` holds; ``members`` are relative to the manifest's folder."""

    members: tuple[str, ...]
    operating_point: OperatingPoint
    preprocessing: DecodeParams
    combination: str = MEAN_PROBABILITY
    folds: tuple[int, ...] = ()
    recipe: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    # Members that are findings models: each finding's operating point, chosen on the pooled
    # out-of-fold predictions (the triage finding's is ``operating_point``), in output order.
    finding_points: dict[str, OperatingPoint] = field(default_factory=dict)

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.finding_points)

    def to_json(self) -> dict[str, Any]:
        findings = (
            {
                # The output order: the JSON's keys are written sorted.
                "findings": list(self.finding_points),
                "finding_operating_points": {
                    n: p.as_dict() for n, p in self.finding_points.items()
                },
            }
            if self.finding_points
            else {}
        )
        return {
            "kind": MANIFEST_KIND,
            "members": list(self.members),
            "folds": list(self.folds),
            "combination": self.combination,
            "operating_point": self.operating_point.as_dict(),
            "preprocessing": self.preprocessing.as_dict(),
            "recipe": self.recipe,
            "metrics": self.metrics,
        } | findings

    @classmethod
    def from_json(cls, payload: Mapping[str, Any]) -> EnsembleManifest:
        return cls(
            members=tuple(str(member) for member in payload["members"]),
            operating_point=OperatingPoint.from_dict(payload["operating_point"]),
            preprocessing=DecodeParams(**payload["preprocessing"]),
            combination=str(payload.get("combination", MEAN_PROBABILITY)),
            folds=tuple(int(fold) for fold in payload.get("folds") or ()),
            recipe=dict(payload.get("recipe") or {}),
            metrics=dict(payload.get("metrics") or {}),
            finding_points={
                str(name): OperatingPoint.from_dict(payload["finding_operating_points"][name])
                for name in payload.get("findings") or ()
            },
        )


def is_manifest(path: Path | str) -> bool:
    """Whether ``path`` names an ensemble manifest rather than a checkpoint or exported file."""
    return Path(path).suffix.lower() == ".json"


def write_manifest(path: Path, manifest: EnsembleManifest) -> Path:
    write_json_atomic(path, manifest.to_json())
    return path


def read_manifest(path: Path | str) -> EnsembleManifest:
    """The manifest at ``path``; an ``EnsembleError`` naming the file when it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise EnsembleError(
            f"ensemble manifest {path} does not exist; pass the {MANIFEST_NAME} that "
            "cxrnet-ensemble wrote (in <sweep folder>/ensemble/)"
        )
    try:
        payload = json.loads(path.read_text())
        if not isinstance(payload, dict) or payload.get("kind") != MANIFEST_KIND:
            raise ValueError(f'not a cxrnet ensemble manifest (no "kind": "{MANIFEST_KIND}")')
        manifest = EnsembleManifest.from_json(payload)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise EnsembleError(
            f"ensemble manifest {path} is unreadable ({error}); rebuild it with "
            "cxrnet-ensemble <sweep folder>"
        ) from error
    if manifest.combination != MEAN_PROBABILITY:
        raise EnsembleError(
            f"ensemble manifest {path}: combination {manifest.combination!r} is unknown to this "
            f"cxrnet (it knows {MEAN_PROBABILITY!r})"
        )
    if not manifest.members:
        raise EnsembleError(f"ensemble manifest {path} lists no member checkpoints")
    return manifest


def member_paths(manifest: EnsembleManifest, manifest_path: Path | str) -> list[Path]:
    folder = Path(manifest_path).expanduser().resolve().parent
    return [folder / member for member in manifest.members]
