"""Experiment tracking that never prompts: W&B goes offline unless credentials exist."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

log = logging.getLogger(__name__)

WandbMode = Literal["auto", "online", "offline"]


def wandb_credentials_present() -> bool:
    """True when W&B could log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return netrc.netrc(netrc_path).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False


def resolve_wandb_mode(mode: WandbMode) -> Literal["online", "offline"]:
    if mode not in ("auto", "online", "offline"):
        raise ValueError(f"wandb mode must be 'auto', 'online' or 'offline', got {mode!r}")
    if mode == "auto":
        return "online" if wandb_credentials_present() else "offline"
    return mode


def wandb_logger(
    save_dir: str,
    project: str = "cxrnet",
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    mode: WandbMode = "auto",
    log_model: bool | str = False,
    id: str | None = None,  # noqa: A002 - W&B's own name for the run id
    **kwargs: Any,
) -> Any:
    """A Lightning ``WandbLogger`` whose mode is settled before W&B is touched."""
    from lightning.pytorch.loggers import WandbLogger

    resolved = resolve_wandb_mode(mode)
    # The W&B client reads these too; setting them keeps any later wandb call from prompting.
    os.environ["WANDB_MODE"] = resolved
    os.environ.setdefault("WANDB_SILENT", "true")
    if resolved == "offline":
        log.info("W&B runs offline (no credentials found); sync later with `wandb sync`")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        job_type=job_type,
        name=name,
        tags=list(tags),
        offline=resolved == "offline",
        log_model=log_model,
        id=id,
        **kwargs,
    )
