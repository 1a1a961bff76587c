"""Experiment tracking that never prompts or hangs: W&B goes offline unless it can go online.

Everything here takes plain values; the entry points read Hydra and pass them in.
"""

from __future__ import annotations

import configparser
import logging
import netrc
import os
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from cxrnet.runs import Override

log = logging.getLogger(__name__)

WandbMode = Literal["auto", "online", "offline", "disabled"]

# Where a checkpoint keeps the W&B run it was written by, so a resumed training continues it.
CHECKPOINT_KEY = "cxrnet_wandb"

# Overrides that say where a job runs or what it logs to, not what it is: left out of run names.
NAME_EXCLUDED_KEYS: tuple[str, ...] = (
    "logger",
    "paths",
    "hydra",
    "data.root",
    "data.sources",
    "ckpt_path",
)


def wandb_credentials_present() -> bool:
    """True when W&B could log in without asking: an API key or token file in the environment,
    or a ~/.netrc entry for the W&B server (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    netrc_path = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        entries = netrc.netrc(netrc_path)
    except (FileNotFoundError, netrc.NetrcParseError, PermissionError):
        return False
    return any(entries.authenticators(host) is not None for host in _wandb_hosts())


def _wandb_hosts() -> set[str]:
    """The W&B server's API host: WANDB_BASE_URL, else `wandb login --host`'s, else the cloud."""
    base_url = os.environ.get("WANDB_BASE_URL")
    if base_url:
        return {urlparse(base_url).hostname or ""}
    # The cloud's API answers under both names, and wandb versions default to either.
    hosts = {"api.wandb.ai", "api.forge.coreweave.com"}
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR", Path.home() / ".config" / "wandb"))
    settings = configparser.ConfigParser()
    try:
        settings.read(config_dir / "settings")
    except configparser.Error:
        return hosts
    if settings.has_option("default", "base_url"):
        hosts.add(urlparse(settings.get("default", "base_url")).hostname or "")
    return hosts


def resolve_wandb_mode(mode: WandbMode) -> Literal["online", "offline", "disabled"]:
    """The mode W&B will really run in: ``auto`` defers to ``WANDB_MODE``, then to credentials.

    Without credentials W&B would ask for an API key, so even ``online`` becomes ``offline``.
    """
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(
            f"logger.wandb.mode must be 'auto', 'online', 'offline' or 'disabled', got {mode!r}"
        )
    if mode == "auto":
        env_mode = os.environ.get("WANDB_MODE", "").lower()
        if env_mode in ("offline", "dryrun"):
            return "offline"
        if env_mode == "disabled":
            return "disabled"
        return "online" if wandb_credentials_present() else "offline"
    if mode == "online" and not wandb_credentials_present():
        log.warning(
            "logger.wandb.mode=online but no W&B credentials (WANDB_API_KEY, ~/.netrc or "
            "`wandb login`): logging offline instead of prompting for a key"
        )
        return "offline"
    return mode


class FallbackWandbLogger(WandbLogger):
    """Lightning's ``WandbLogger`` that logs offline when the W&B service cannot be reached.

    The run starts lazily on rank 0, as in Lightning; other ranks get a dummy experiment and
    never touch W&B.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, which recent wandb versions warn about.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is None and self._wandb_init.get("mode") == "online":
            try:
                return super().experiment
            except Exception as error:  # W&B raises CommError, AuthenticationError, ...
                first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
                log.warning(
                    "W&B could not go online (%s: %s); logging offline instead, "
                    "upload later with `wandb sync`",
                    type(error).__name__,
                    first_line,
                )
                self._wandb_init["mode"] = "offline"
        return super().experiment


def wandb_logger(
    save_dir: str,
    project: str = "cxrnet",
    entity: str | None = None,
    group: str | None = None,
    job_type: str | None = None,
    name: str | None = None,
    tags: Sequence[str] = (),
    mode: WandbMode = "auto",
    log_model: bool | Literal["all"] = False,
    id: str | None = None,
    init_timeout: float = 30.0,
    **kwargs: Any,
) -> FallbackWandbLogger:
    """A W&B logger whose mode is settled before W&B is touched.

    ``id`` continues that run (``resume="allow"``); ``log_model`` uploads checkpoints as
    artifacts, offline too (they are kept for ``wandb sync``). ``init_timeout`` bounds how long
    going online may take before falling back to offline.
    """
    resolved = resolve_wandb_mode(mode)
    if resolved == "offline":
        log.info("W&B logs offline; the end of the run prints how to upload it")
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return FallbackWandbLogger(
        save_dir=save_dir,
        project=project,
        entity=entity,
        group=group,
        job_type=job_type,
        name=name,
        tags=list(tags),
        # Lightning's own offline flag forbids log_model; W&B itself keeps offline artifacts.
        offline=False,
        mode=resolved,
        log_model=log_model,
        id=id,
        # Quiet, because finish_wandb_run prints the one thing worth knowing: where the run is.
        settings={"init_timeout": init_timeout, "silent": True},
        **kwargs,
    )


def run_name_from_overrides(
    overrides: Iterable[str], excluded: Sequence[str] = NAME_EXCLUDED_KEYS
) -> str | None:
    """``"data.fold=1,seed=2"`` from a job's command-line overrides, as Hydra's override_dirname.

    Keys under ``excluded`` (and their children, ``paths`` covers ``paths.log_dir``) are left out.
    """
    kept = [Override.parse(o) for o in overrides]
    named = [str(o).lstrip("+~") for o in kept if not o.in_group(*excluded)]
    return ",".join(sorted(named)) or None


def wandb_run_defaults(
    sweep_dir: str | None = None,
    overrides: Iterable[str] = (),
    ckpt_path: str | None = None,
) -> dict[str, str]:
    """Group, name and id for a run that its config leaves unset.

    A multirun job (``sweep_dir`` given) is grouped by its sweep folder's name and named by its
    overrides; a run resumed from ``ckpt_path`` continues the W&B run stored in the checkpoint.
    """
    defaults: dict[str, str] = {}
    if sweep_dir:
        defaults["group"] = Path(sweep_dir).name
        name = run_name_from_overrides(overrides)
        if name:
            defaults["name"] = name
    if ckpt_path:
        run_id = wandb_run_id_from_checkpoint(ckpt_path)
        if run_id:
            defaults["id"] = run_id
    return defaults


def wandb_run_id_from_checkpoint(path: str | Path) -> str | None:
    """The W&B run id a checkpoint was written under, or None (older or non-W&B checkpoints)."""
    from cxrnet.models.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file():
        return None
    # mmap: only the small dictionaries are read, not every weight.
    checkpoint = load_checkpoint(path, mmap=True)
    stored = checkpoint.get(CHECKPOINT_KEY) or {}
    return stored.get("run_id")


def finish_wandb_run(exit_code: int | None = None) -> None:
    """Close the current W&B run, if any, and say where it is (and how to upload it if offline).

    Called after every job, failed ones too (``exit_code=1`` marks the run failed), so the next
    multirun job starts its own run. W&B is not imported when nothing used it.
    """
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    offline = bool(run.offline)
    sync_dir = run.sync_dir
    url = None if offline else run.url
    run.finish(exit_code=exit_code)
    # finish() can return before the offline transaction log is fully on disk; teardown waits
    # for it, so the run folder is complete (ready for `wandb sync`) once the job is over.
    wandb.teardown()
    if offline:
        print(f"W&B offline run: {sync_dir}")
        print(f"  upload it with: wandb sync {sync_dir}")
    elif url:
        print(f"W&B run: {url}")
