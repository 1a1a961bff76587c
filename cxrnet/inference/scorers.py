"""Scorers turn a batch of decoded films into pneumonia probabilities: the checkpoint's network
in PyTorch, a fold ensemble's members (their mean), or an exported ONNX file through ONNX Runtime
(no Lightning, no Hydra needed)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from cxrnet.data.decode import DecodeParams
from cxrnet.evaluation.probabilities import (
    DEFAULT_THRESHOLD,
    mean_probability,
    network_probabilities,
)
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.inference.ensemble import ensemble_scorer
from cxrnet.inference.model import Findings, load_inference_model
from cxrnet.models.ensemble_manifest import is_manifest
from cxrnet.user_errors import CheckpointError, ConfigError

# The metadata key exported files keep their threshold and preprocessing under.
METADATA_KEY = "cxrnet"


class Scorer(Protocol):
    preprocessing: DecodeParams
    operating_point: OperatingPoint | None
    backend: str

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """(N, 1, S, S) float32 in [0, 1] to (N,) pneumonia probabilities, or (N, F) for a
        findings model (``findings_of``)."""
        ...


def threshold_of(scorer: Scorer) -> float:
    return DEFAULT_THRESHOLD if scorer.operating_point is None else scorer.operating_point.threshold


def findings_of(scorer: Scorer) -> Findings:
    """What a scorer's columns are: a findings model's findings, or none (one probability)."""
    return getattr(scorer, "findings", None) or Findings()


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} asked for, but no CUDA GPU is visible; use device=cpu")
    return torch.device(device)


@dataclass
class TorchScorer:
    net: torch.nn.Module
    preprocessing: DecodeParams
    operating_point: OperatingPoint | None
    device: torch.device
    backend: str = "pytorch"
    findings: Findings = field(default_factory=Findings)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            batch = torch.from_numpy(images).to(self.device)
            logits = self.net(batch)
            return network_probabilities(logits, self.findings.names).float().cpu().numpy()


@dataclass
class OnnxScorer:
    session: Any
    preprocessing: DecodeParams
    operating_point: OperatingPoint | None
    backend: str = "onnxruntime"
    findings: Findings = field(default_factory=Findings)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        name = self.session.get_inputs()[0].name
        (probabilities,) = self.session.run(None, {name: images.astype(np.float32)})
        shape = (-1, len(self.findings.names)) if self.findings.names else (-1,)
        return np.asarray(probabilities, dtype=np.float32).reshape(shape)


def export_metadata(
    preprocessing: DecodeParams, point: OperatingPoint | None, findings: Findings | None = None
) -> dict[str, Any]:
    """What an exported file says of itself: preprocessing, operating point, input, output;
    for a findings model the findings in output order and each one's operating point."""
    meta: dict[str, Any] = {
        "preprocessing": preprocessing.as_dict(),
        "operating_point": None if point is None else point.as_dict(),
        "input": "float32 (N, 1, S, S), one grey channel scaled to [0, 1]",
        "output": "pneumonia probability (N,)",
    }
    if findings is not None and findings.names:
        meta["output"] = f"probability per finding (N, {len(findings.names)}), in findings' order"
        meta["findings"] = list(findings.names)
        meta["finding_operating_points"] = {
            name: point.as_dict() for name, point in findings.points.items()
        }
    return meta


def _from_metadata(text: str, path: Path) -> tuple[DecodeParams, OperatingPoint | None, Findings]:
    try:
        meta = json.loads(text)
        point = meta.get("operating_point")
        findings = Findings(
            tuple(str(name) for name in meta.get("findings") or ()),
            {
                str(name): OperatingPoint.from_dict(value)
                for name, value in (meta.get("finding_operating_points") or {}).items()
            },
        )
        return (
            DecodeParams(**meta["preprocessing"]),
            None if point is None else OperatingPoint.from_dict(point),
            findings,
        )
    except (ValueError, KeyError, TypeError) as error:
        message = (
            f"{path}: its '{METADATA_KEY}' metadata is unreadable ({error}); export the "
            "checkpoint again with cxrnet-export"
        )
        raise CheckpointError(message) from error


def onnx_scorer(path: Path, device: str = "cpu", threads: int | None = None) -> OnnxScorer:
    try:
        import onnxruntime as ort
    except ImportError as error:
        raise ImportError(
            f"{path} is an ONNX file and needs onnxruntime: pip install 'cxrnet[onnx]'"
        ) from error
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    if device != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # onnxruntime's own types (InvalidProtobuf, Fail, ...)
        raise CheckpointError(
            f"{path} is not a readable ONNX model ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); export it again with "
            "cxrnet-export"
        ) from error
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise CheckpointError(
            f"{path} has no '{METADATA_KEY}' metadata (threshold and preprocessing); export it "
            "with cxrnet-export"
        )
    preprocessing, point, findings = _from_metadata(meta[METADATA_KEY], path)
    return OnnxScorer(session, preprocessing, point, findings=findings)


@dataclass
class FlipAveraged:
    """Light test-time augmentation: the mean of a film's and its mirror image's probability.

    The threshold stays the one chosen on validation scores without augmentation; averaging
    two views mostly pulls probabilities away from the extremes, so check the operating point
    on validation data before relying on it.
    """

    scorer: Scorer

    @property
    def preprocessing(self) -> DecodeParams:
        return self.scorer.preprocessing

    @property
    def operating_point(self) -> OperatingPoint | None:
        return self.scorer.operating_point

    @property
    def backend(self) -> str:
        return f"{self.scorer.backend}, horizontal-flip averaging"

    @property
    def findings(self) -> Findings:
        return findings_of(self.scorer)

    @property
    def net(self) -> torch.nn.Module | None:  # Grad-CAM explains the unflipped view
        return getattr(self.scorer, "net", None)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        mirrored = np.ascontiguousarray(images[..., ::-1])
        return mean_probability([self.scorer(images), self.scorer(mirrored)]).astype(np.float32)


def load_scorer(
    path: str | Path, device: str = "auto", tta: bool = False, network: str | None = None
) -> Scorer:
    """A checkpoint (``.ckpt``), an ensemble manifest (``ensemble.json``) or an exported ONNX
    file (``.onnx``) ready to score films; ``tta`` adds horizontal-flip averaging. ``network``:
    the ``model.net.name`` the user allows a checkpoint to import."""
    scorer = _load_scorer(Path(path).expanduser(), device, network)
    return FlipAveraged(scorer) if tta else scorer


def _load_scorer(path: Path, device: str, network: str | None) -> Scorer:
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {path} does not exist")
        return onnx_scorer(path, "cpu" if device == "auto" else device)
    if is_manifest(path):
        return ensemble_scorer(path, resolve_device(device), network)
    model = load_inference_model(path, network)
    target = resolve_device(device)
    return TorchScorer(
        model.net.to(target),
        model.preprocessing,
        model.operating_point,
        target,
        findings=Findings(model.findings, model.finding_points),
    )
