"""Reading checkpoints, and stamping them with what inference needs: plain data only, so
opening a file can never run code.

Every consumer (``cxrnet-train ckpt_path=``, ``cxrnet-eval``, the W&B resume lookup) loads
through ``load_checkpoint``: ``torch.load(weights_only=True)``, with a missing, damaged or
pickle-carrying file refused in one line that names it, before any data is read. Checkpoints
therefore hold tensors, numbers, strings, lists and dicts only: the optimizer and scheduler as
configuration (``cxrnet.models.module``), data settings via ``cxrnet.plain_data.plain_data``.

After training, the best checkpoint is stamped (``stamp_checkpoint``) with the validation-chosen
operating point and the preprocessing, so evaluation, prediction and export need nothing else.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from cxrnet.data.decode import DecodeParams
from cxrnet.data.seen_films import SeenFilms
from cxrnet.evaluation.thresholds import OperatingPoint
from cxrnet.models.registry import UntrustedNetwork, check_stored_network
from cxrnet.publish import write_file
from cxrnet.user_errors import CheckpointError

_HINT = "pass ckpt_path=<run folder>/checkpoints/<file>.ckpt, a file that cxrnet-train wrote"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _blocked_global(error: BaseException) -> str:
    """What torch refused to unpickle, e.g. ``GLOBAL posix.system``, from its long message."""
    found = re.search(r"unsupported (?:global: )?GLOBAL (\S+)", str(error), re.IGNORECASE)
    return f"it needs {found.group(1)}" if found else _first_line(error)


def load_checkpoint(path: Path | str, *, mmap: bool = False) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded on the CPU without running any code.

    ``mmap=True`` maps the tensors instead of reading them: cheap when only the small
    dictionaries (hyperparameters, the W&B run id) are wanted. Raises ``CheckpointError``.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise CheckpointError(f"checkpoint {path} {what}; {_HINT}")
    # torch.save writes a zip archive; anything else (a truncated copy, an HTML error page from
    # a download, a legacy pickle) would otherwise surface as "invalid load key, 'x'".
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a PyTorch checkpoint (not a zip archive "
            f"written by torch.save); {_HINT}"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} holds pickled objects, not only plain data "
            f"({_blocked_global(error)}); it is refused because unpickling it could run code. "
            "Checkpoints from cxrnet "
            "before optimizers were stored as configuration need retraining"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"checkpoint {path} is damaged ({_first_line(error)}); {_HINT}"
        ) from error
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(
            f"checkpoint {path} holds no state_dict, so it is not a model; {_HINT}"
        )
    return checkpoint


def check_network_of(
    checkpoint: Mapping[str, Any], path: Path | str, allowed: str | None = None
) -> None:
    """Refuse (``CheckpointError``) a checkpoint whose stored network building it would import
    from a module the user did not name (``allowed``: their ``model.net.name``)."""
    net = (checkpoint.get("hyper_parameters") or {}).get("net") or {}
    name = net.get("name") if isinstance(net, Mapping) else None
    if name is None:
        return  # nothing to build from: the consumer says what is missing
    try:
        check_stored_network(str(name), allowed)
    except UntrustedNetwork as error:
        raise CheckpointError(f"checkpoint {path}: {error}") from error


# The checkpoint key holding {"operating_point": {...}, "preprocessing": {...}, ...}.
INFERENCE_KEY = "cxrnet_inference"
PREPROCESSING_KEYS = ("image_size", "resize", "equalize", "interpolation", "dicom_window")


def preprocessing_of(checkpoint: Mapping[str, Any]) -> DecodeParams:
    """The decoding the network was trained with: stored settings, else the data module's."""
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("preprocessing")
    if stored is None:
        hparams = checkpoint.get("datamodule_hyper_parameters") or {}
        stored = {key: hparams[key] for key in PREPROCESSING_KEYS if key in hparams}
    return DecodeParams(**stored)


def operating_point_of(checkpoint: Mapping[str, Any]) -> OperatingPoint | None:
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("operating_point")
    return None if stored is None else OperatingPoint.from_dict(stored)


def finding_points_of(checkpoint: Mapping[str, Any]) -> dict[str, OperatingPoint] | None:
    """A findings model's stored operating point per finding; None when none is stored."""
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("finding_operating_points")
    if not stored:
        return None
    return {str(name): OperatingPoint.from_dict(point) for name, point in stored.items()}


def seen_films_of(checkpoint: Mapping[str, Any]) -> SeenFilms | None:
    """The films the checkpoint saw; None for one stamped before they were recorded."""
    return SeenFilms.from_dict((checkpoint.get(INFERENCE_KEY) or {}).get("seen_films"))


def validation_of(checkpoint: Mapping[str, Any]) -> dict[str, float]:
    """What the stored operating point achieved on the validation split (``sensitivity``,
    ``specificity``, films per class); empty for checkpoints stamped before it was stored."""
    stored = (checkpoint.get(INFERENCE_KEY) or {}).get("validation") or {}
    return {str(key): float(value) for key, value in stored.items()}


def stamp_checkpoint(
    path: Path | str,
    operating_point: OperatingPoint,
    preprocessing: DecodeParams,
    validation: Mapping[str, float] | None = None,
    finding_points: Mapping[str, OperatingPoint] | None = None,
    seen: SeenFilms | None = None,
) -> None:
    """Write the operating point and preprocessing into ``path``, replacing the file atomically.

    ``seen``: the films that trained the model, chose its checkpoint and its threshold (their
    pixel digests and patients), so that no later report scores them as new films.

    ``finding_points``: a findings model's operating point per finding (its triage finding's is
    ``operating_point``), each chosen on the val films that label it.

    ``validation``: what the operating point achieved on the validation split, so another
    site can be told which threshold would give it the same sensitivity (``cxrnet-eval``).
    """
    path = Path(path)
    checkpoint = load_checkpoint(path)
    checkpoint[INFERENCE_KEY] = {
        "operating_point": operating_point.as_dict(),
        "preprocessing": preprocessing.as_dict(),
        "validation": {key: float(value) for key, value in (validation or {}).items()},
    }
    if seen is not None:
        checkpoint[INFERENCE_KEY]["seen_films"] = seen.as_dict()
    if finding_points:
        checkpoint[INFERENCE_KEY]["finding_operating_points"] = {
            name: point.as_dict() for name, point in finding_points.items()
        }
    write_file(path, lambda temporary: torch.save(checkpoint, temporary))
