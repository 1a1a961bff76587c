"""Where the data comes from, decided once for every entry point: the configured sources, or
the built-in synthetic dataset, generated on first use."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cxrnet.data.synthetic import SyntheticSpec, ensure_synthetic

log = logging.getLogger(__name__)

DataRoot = str | list[str]


def resolve_data_root(
    root: str | Path | Sequence[str | Path] | None,
    synthetic: Mapping[str, Any] | None,
    cache_dir: str | Path,
) -> DataRoot:
    """``root`` as given (a folder, a manifest, or a list of either), or, when unset, the
    synthetic dataset described by ``synthetic`` under ``cache_dir/synthetic``."""
    if root:
        if isinstance(root, (str, Path)):
            return str(root)
        return [str(source) for source in root]
    spec = SyntheticSpec(**dict(synthetic or {}))
    generated = ensure_synthetic(Path(cache_dir) / "synthetic", spec)
    log.info("data.root not set: using the built-in synthetic dataset at %s", generated)
    return str(generated)
