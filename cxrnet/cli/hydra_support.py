"""What every Hydra entry point shares: where the configs are, Hydra's version, the job's
overrides. The resolvers the configs use are ``cxrnet.config.register_resolvers``."""

from __future__ import annotations

import logging

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

CONFIG_PATH = "pkg://cxrnet.conf"
HYDRA_VERSION = "1.3"


def job_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job; none outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def allowed_network(cfg: DictConfig) -> str | None:
    """The ``model.net.name`` the user gave eval/predict/export: the one import path a loaded
    checkpoint may name (``cxrnet.models.registry.check_stored_network``)."""
    name = OmegaConf.select(cfg, "model.net.name")
    return None if name is None else str(name)
