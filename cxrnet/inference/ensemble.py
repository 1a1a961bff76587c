"""A fold ensemble used as one model: its manifest (``ensemble.json``) and its members loaded
to score films with the mean of their probabilities.

The manifest names the member checkpoints relative to itself (a moved or copied sweep folder
still loads), the combination rule, the operating point with its criterion, the preprocessing
every member shares and the recipe that trained them. ``cxrnet-ensemble`` (run by the sweep of
``experiment=best_cv`` when its folds end) writes it; ``cxrnet-predict`` and ``cxrnet-export``
take it wherever they take a checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cxrnet.data.decode import DecodeParams
from cxrnet.errors import EnsembleError
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.inference import InferenceModel, inference_model
from cxrnet.runs import write_json_atomic

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

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": MANIFEST_KIND,
            "members": list(self.members),
            "folds": list(self.folds),
            "combination": self.combination,
            "operating_point": self.operating_point.as_dict(),
            "preprocessing": self.preprocessing.as_dict(),
            "recipe": self.recipe,
            "metrics": self.metrics,
        }

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


@dataclass(frozen=True)
class EnsembleModel:
    """The members' networks with the ensemble's own preprocessing and operating point."""

    members: tuple[InferenceModel, ...]
    preprocessing: DecodeParams
    operating_point: OperatingPoint

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold


def load_ensemble(path: Path | str) -> EnsembleModel:
    """Every member of the manifest at ``path``, each checked to decode films as the manifest
    says: a member trained at another size would score different pixels than it was fit on."""
    manifest = read_manifest(path)
    members = []
    for member in member_paths(manifest, path):
        model = inference_model(load_checkpoint(member))
        if model.preprocessing != manifest.preprocessing:
            raise EnsembleError(
                f"ensemble manifest {path}: member {member} decodes films with "
                f"{model.preprocessing.as_dict()}, the manifest with "
                f"{manifest.preprocessing.as_dict()}; rebuild it with cxrnet-ensemble"
            )
        members.append(model)
    return EnsembleModel(tuple(members), manifest.preprocessing, manifest.operating_point)


def mean_probability(probabilities: Sequence[np.ndarray]) -> np.ndarray:
    """The combination rule: each film's mean over the members (one home for train and serve)."""
    return np.mean(np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]), axis=0)


@dataclass
class EnsembleScorer:
    """Scores a batch with every member and returns the mean probability (``Scorer``)."""

    nets: tuple[torch.nn.Module, ...]
    preprocessing: DecodeParams
    operating_point: OperatingPoint
    device: torch.device
    backend: str = "pytorch"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device)
            each = [torch.sigmoid(net(batch).squeeze(-1)).float().cpu() for net in self.nets]
        return mean_probability([p.numpy() for p in each]).astype(np.float32)


def ensemble_scorer(path: Path | str, device: torch.device) -> EnsembleScorer:
    model = load_ensemble(path)
    nets = tuple(member.net.to(device) for member in model.members)
    backend = f"pytorch, mean of {len(nets)} members"
    return EnsembleScorer(nets, model.preprocessing, model.operating_point, device, backend)
