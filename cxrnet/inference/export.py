"""Self-contained files for deployment: the network plus its threshold and preprocessing.

ONNX files carry the settings as model metadata (``cxrnet``: JSON), TorchScript files as an
extra file (``cxrnet.json``). Both output the pneumonia probability, not the logit; a findings
model's output one probability per finding, their names and thresholds in the metadata. A fold
ensemble (its ``ensemble.json``) exports as one file whose graph averages its members.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from cxrnet.evaluation.probabilities import network_probabilities
from cxrnet.inference.ensemble import EnsembleModel, load_ensemble
from cxrnet.inference.model import InferenceModel, load_inference_model
from cxrnet.inference.scorers import METADATA_KEY, Findings, export_metadata
from cxrnet.models.ensemble_manifest import is_manifest, member_paths, read_manifest
from cxrnet.publish import write_file
from cxrnet.user_errors import ConfigError

Exportable = InferenceModel | EnsembleModel

ExportFormat = Literal["onnx", "torchscript"]
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt"}
# The names each format's file may have: a TorchScript file named .onnx (or an ONNX one named
# .pt) is read as the other format by cxrnet-predict and fails there, far from the export.
ACCEPTED_SUFFIXES = {"onnx": (".onnx",), "torchscript": (".pt", ".pth")}


class ProbabilityNet(nn.Module):
    """The network with its sigmoid, so an exported file answers in probabilities."""

    def __init__(self, net: nn.Module, findings: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.net = net
        self.findings = findings

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return network_probabilities(self.net(images), self.findings)


class MeanProbabilityNet(nn.Module):
    """The members' probabilities averaged in the graph: the ensemble's rule
    (``cxrnet.evaluation.probabilities.mean_probability``) inside one exported file."""

    def __init__(self, nets: list[nn.Module], findings: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.members = nn.ModuleList(ProbabilityNet(net, findings) for net in nets)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(images) for member in self.members]).mean(dim=0)


def probability_net(model: Exportable) -> nn.Module:
    """The module an exported file runs: films in, pneumonia probabilities out."""
    if isinstance(model, EnsembleModel):
        nets = [member.net for member in model.members]
        return MeanProbabilityNet(nets, model.findings).eval()
    return ProbabilityNet(model.net, model.findings).eval()


def _metadata(model: Exportable) -> dict:
    """``export_metadata`` of the model (a findings model's findings and thresholds too)."""
    findings = Findings(model.findings, model.finding_points)
    return export_metadata(model.preprocessing, model.operating_point, findings)


def _example(model: Exportable, batch: int = 2) -> torch.Tensor:
    size = model.preprocessing.image_size
    return torch.rand(batch, 1, size, size)


def export_onnx(model: Exportable, output: Path) -> Path:
    import onnx

    wrapped = probability_net(model)
    with warnings.catch_warnings():
        # The TorchScript-based exporter: deprecated, but it exports these plain convolutional
        # networks in under a second, where the torch.export one takes ~40 s on 2 busy cores.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapped,
            (_example(model),),
            str(output),
            input_names=["image"],
            output_names=["probability"],
            dynamic_axes={"image": {0: "batch"}, "probability": {0: "batch"}},
            dynamo=False,
        )
    proto = onnx.load(str(output))
    entry = proto.metadata_props.add()
    entry.key = METADATA_KEY
    entry.value = json.dumps(_metadata(model))
    proto.doc_string = "cxrnet pneumonia classifier: input float32 (N,1,S,S) in [0,1]"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(output))
    return output


def export_torchscript(model: Exportable, output: Path) -> Path:
    wrapped = probability_net(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still loads anywhere
        traced = torch.jit.trace(wrapped, _example(model))
    meta = json.dumps(_metadata(model))
    torch.jit.save(traced, str(output), _extra_files={f"{METADATA_KEY}.json": meta})
    return output


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)  # a hard link or a bind mount of the same file
    except OSError:
        return False


def check_target(target: Path, inputs: list[Path], overwrite: bool) -> None:
    """Refuse a ``target`` that is an input (the export would replace the trained model) or a
    folder, and an existing file unless ``overwrite``."""
    for source in inputs:
        if _same_file(target, source):
            raise ConfigError(
                f"output={target} is the model being exported ({source}); writing it would "
                "replace the trained model: choose another output file"
            )
    if target.is_dir():
        raise ConfigError(f"output={target} is a folder; name a file, e.g. {target / 'model'}")
    if target.exists() and not overwrite:
        raise ConfigError(
            f"output={target} exists; pass overwrite=true to replace it, or another output="
        )


def export_checkpoint(
    checkpoint: Path | str,
    output: Path | str | None,
    fmt: ExportFormat = "onnx",
    network: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Export ``checkpoint`` (or an ensemble manifest) as ``fmt``; ``output`` defaults to its
    name with the format's suffix. ``network``: the ``model.net.name`` the user allows it to
    import. The file is written whole through a temporary file; an existing ``output`` is
    replaced only with ``overwrite``, and never when it is the checkpoint or a member."""
    if fmt not in SUFFIXES:
        raise ConfigError(f"format={fmt} is not a format; choose one of {sorted(SUFFIXES)}")
    checkpoint = Path(checkpoint).expanduser()
    target = Path(output) if output else checkpoint.with_suffix(SUFFIXES[fmt])
    manifest = is_manifest(checkpoint)
    inputs = [checkpoint]
    if manifest:
        inputs += member_paths(read_manifest(checkpoint), checkpoint)
    check_target(target, inputs, overwrite)
    if target.suffix.lower() not in ACCEPTED_SUFFIXES[fmt]:
        raise ConfigError(
            f"output={target} does not end in {' or '.join(ACCEPTED_SUFFIXES[fmt])}, the suffix "
            f"of a format={fmt} file; name it {target.with_suffix(SUFFIXES[fmt]).name}, or pass "
            "the format its name says"
        )
    model: Exportable
    if manifest:
        model = load_ensemble(checkpoint, network)
    else:
        model = load_inference_model(checkpoint, network)
    write = export_onnx if fmt == "onnx" else export_torchscript
    write_file(target, lambda temporary: write(model, temporary))
    return target
