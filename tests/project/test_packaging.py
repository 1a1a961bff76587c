"""The package ships its configs: a built wheel runs from any folder, without the source tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_every_subpackage_is_listed_in_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")
    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "cxrnet").rglob("__init__.py")
    }
    assert on_disk | {"cxrnet.conf"} == listed


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools", minversion="69", reason="the test extra installs setuptools")
    # Build from a clean copy: setuptools reuses an in-tree build/ folder, stale files and all.
    source = tmp_path_factory.mktemp("source") / "cxrnet"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".venv", ".git", "build", "dist", "logs", "*.egg-info", "__pycache__", "wandb"
        ),
    )
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            out,
            source,
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = out.glob("cxrnet-*.whl")
    return built


def test_wheel_holds_every_config(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for config in (REPO / "conf").rglob("*.yaml"):
        assert f"cxrnet/conf/{config.relative_to(REPO / 'conf').as_posix()}" in names


def test_wheel_holds_no_test_data(wheel: Path) -> None:
    # Tests and their data stay out of what users install.
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if name.startswith("tests/") or name.endswith(".jpeg")]


@pytest.mark.slow
def test_installed_wheel_trains_from_another_folder(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = os.environ | {
        "PYTHONPATH": str(site),
        "CXRNET_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
    }
    code = "import cxrnet, sys; print('cxrnet from', cxrnet.__file__); " + (
        "sys.argv = ['cxrnet-train', 'debug=fast']; from cxrnet.cli.train import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"cxrnet from {site}" in done.stdout
    assert "run folder: " in done.stdout
