"""What every Hydra entry point shares: config location, resolvers, instantiating groups."""

from __future__ import annotations

import json
import logging
import math
import uuid
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

CONFIG_PATH = "pkg://cxrnet.conf"
HYDRA_VERSION = "1.3"


def register_resolvers() -> None:
    # Cached, so one process names one folder even though Hydra resolves the path several times.
    if not OmegaConf.has_resolver("cxrnet_uid"):
        OmegaConf.register_new_resolver("cxrnet_uid", lambda: uuid.uuid4().hex[:6], use_cache=True)


def instantiate_group(group: DictConfig | None) -> list[Any]:
    """Instantiate every ``_target_`` entry of a group such as ``callbacks`` or ``logger``."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry and "_target_" in entry]


def save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


def write_metrics(path: Path, payload: dict[str, Any]) -> None:
    """Write ``metrics.json`` whole or not at all: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = json.loads(json.dumps(payload, default=str), parse_constant=lambda _: None)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(clean), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _finite(value: Any) -> Any:
    """NaN and infinity are not JSON; write them as null rather than an invalid file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value
