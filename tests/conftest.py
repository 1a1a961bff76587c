"""Shared fixtures: a tiny synthetic dataset, composed configs, the real images where present."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers.compose import compose_in
from helpers.real_films import REAL_224, build_sample, require
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# One thread per test process where xdist runs one worker per core (the default run): each
# worker's training, and every console script it starts (which inherits this), spinning up a
# thread per core oversubscribed them (16% slower). The slow tier runs in one process (-n 0)
# with torch's own thread count, as before. Set before torch is imported; an explicit setting
# wins.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Small and deliberately easy (strong opacities, little noise): tests check the pipeline learns,
# not how hard the default synthetic task is.
TINY_SPEC = SyntheticSpec(
    n_train=64,
    n_val=24,
    n_test=24,
    min_size=48,
    max_size=72,
    seed=3,
    opacity_scale=3.0,
    noise_scale=0.5,
)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset in the real layout; read-only by convention."""
    return generate_synthetic(tmp_path_factory.mktemp("synthetic") / "data", TINY_SPEC)


@pytest.fixture
def synthetic_copy(synthetic_root: Path, tmp_path: Path) -> Path:
    """A private copy of the synthetic dataset that a test may damage."""
    return Path(shutil.copytree(synthetic_root, tmp_path / "data"))


@pytest.fixture
def real_224() -> Path:
    """../shared/data/chest_xray_224 (read-only); skips where this checkout has none."""
    return require(REAL_224)


@pytest.fixture(scope="session")
def real_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """32 real films copied from ../shared/data (tests/helpers/real_films.py); read-only by
    convention (tests copy what they change). Skips where ../shared/data is absent."""
    return build_sample(tmp_path_factory.mktemp("real_sample"))


ComposeFn = Callable[..., DictConfig]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> ComposeFn:
    """Compose a cxrnet config as the entry point would, outputs and caches under tmp_path."""

    def _compose(config_name: str = "train", overrides: list[str] | None = None) -> DictConfig:
        return compose_in(tmp_path, config_name, overrides)

    yield _compose
    GlobalHydra.instance().clear()


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A single-node Slurm cluster on localhost for the session (tests/helpers/slurm_cluster.py)."""
    from helpers.slurm_cluster import SlurmCluster, SlurmUnavailable

    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except SlurmUnavailable as error:
        cluster.stop()
        pytest.skip(f"no local Slurm cluster: {error}")
    try:
        yield cluster
    finally:
        cluster.stop()
