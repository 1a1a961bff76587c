"""A fold ensemble used as one model: the members its manifest (``ensemble.json``,
``cxrnet.models.ensemble_manifest``) names, loaded to score films with the mean of their
probabilities."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.probabilities import mean_probability, network_probabilities
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.inference.model import Findings, InferenceModel, load_inference_model
from cxrnet.models.ensemble_manifest import member_paths, read_manifest
from cxrnet.user_errors import EnsembleError


@dataclass(frozen=True)
class EnsembleModel:
    """The members' networks with the ensemble's own preprocessing and operating point."""

    members: tuple[InferenceModel, ...]
    preprocessing: DecodeParams
    operating_point: OperatingPoint
    # Findings models: each finding's pooled out-of-fold operating point, in output order.
    finding_points: dict[str, OperatingPoint] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return self.operating_point.threshold

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.finding_points)


def load_ensemble(path: Path | str, network: str | None = None) -> EnsembleModel:
    """Every member of the manifest at ``path``, each checked to decode films as the manifest
    says: a member trained at another size would score different pixels than it was fit on.
    ``network``: the ``model.net.name`` the user allows members to import."""
    manifest = read_manifest(path)
    members = []
    for member in member_paths(manifest, path):
        model = load_inference_model(member, network)
        if model.findings != manifest.findings:
            raise EnsembleError(
                f"ensemble manifest {path}: member {member} outputs "
                f"{list(model.findings) or 'one pneumonia probability'}, the manifest "
                f"{list(manifest.findings) or 'one pneumonia probability'}; rebuild it with "
                "cxrnet-ensemble"
            )
        if model.preprocessing != manifest.preprocessing:
            raise EnsembleError(
                f"ensemble manifest {path}: member {member} decodes films with "
                f"{model.preprocessing.as_dict()}, the manifest with "
                f"{manifest.preprocessing.as_dict()}; rebuild it with cxrnet-ensemble"
            )
        members.append(model)
    return EnsembleModel(
        tuple(members), manifest.preprocessing, manifest.operating_point, manifest.finding_points
    )


@dataclass
class EnsembleScorer:
    """Scores a batch with every member and returns the mean probability (``Scorer``)."""

    nets: tuple[torch.nn.Module, ...]
    preprocessing: DecodeParams
    operating_point: OperatingPoint
    device: torch.device
    backend: str = "pytorch"
    findings: Findings = field(default_factory=Findings)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        names = self.findings.names
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device)
            each = [network_probabilities(net(batch), names).float().cpu() for net in self.nets]
        return mean_probability([p.numpy() for p in each]).astype(np.float32)


def ensemble_scorer(
    path: Path | str, device: torch.device, network: str | None = None
) -> EnsembleScorer:
    model = load_ensemble(path, network)
    nets = tuple(member.net.to(device) for member in model.members)
    backend = f"pytorch, mean of {len(nets)} members"
    findings = Findings(model.findings, model.finding_points)
    return EnsembleScorer(
        nets, model.preprocessing, model.operating_point, device, backend, findings
    )


class MeanProbabilityNet(torch.nn.Module):
    """The members as one network: the logit of their mean pneumonia probability, so anything
    that applies the sigmoid to a network's output (``ClassifierModule``, ``cxrnet-eval``) gets
    the ensemble's combination rule. ``members`` stay separate for per-member Grad-CAM."""

    def __init__(self, nets: tuple[torch.nn.Module, ...], findings: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.members = torch.nn.ModuleList(nets)
        self.findings = findings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        each = torch.stack(
            [network_probabilities(net(images), self.findings).double() for net in self.members]
        )
        # float64 and a clamp: the sigmoid of this logit gives the mean back to float32 precision.
        mean = each.mean(dim=0).clamp(1e-12, 1 - 1e-12)
        logits = torch.logit(mean).to(images.dtype)
        return logits if self.findings else logits.unsqueeze(-1)
