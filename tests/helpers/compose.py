"""Compose a cxrnet config as the entry point would, its outputs and caches under one folder."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cxrnet.config import register_resolvers


def compose_in(
    folder: Path, config_name: str = "train", overrides: list[str] | None = None
) -> DictConfig:
    """``config_name`` with ``overrides``; run folder, cache and logs under ``folder``."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module("cxrnet.conf", version_base="1.3"):
        cfg = compose(config_name, overrides=overrides or [], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(folder / "run")
        cfg.paths.cache_dir = str(folder / "cache")
        cfg.paths.log_dir = str(folder / "logs")
        del cfg.hydra
    return cfg
