"""W&B's folders outside the run folder are checked before training: one line, not a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import run_train

from cxrnet.tracking.wandb_folders import WANDB_FOLDERS, check_wandb_folders
from cxrnet.user_errors import ConfigError


def test_a_home_that_is_a_file_stops_a_wandb_run_before_any_data_work(
    tmp_path: Path, synthetic_root: Path
) -> None:
    # Before: the run decoded its data, then died at fit start with a PermissionError traceback.
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    done = run_train(
        ["debug=fast", f"data.root={synthetic_root}", "logger=wandb"],
        tmp_path,
        env={"HOME": str(home), "WANDB_MODE": "offline", "CXRNET_CACHE_DIR": str(tmp_path)},
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"error: logger=wandb: W&B cannot write {home}" in done.stderr
    assert "WANDB_CONFIG_DIR" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.rglob("*.npy"))  # stopped before any film was decoded


def test_folders_named_by_their_variables_are_used_instead_of_home(tmp_path: Path) -> None:
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    env = {"HOME": str(home)}
    with pytest.raises(ConfigError, match="WANDB_CONFIG_DIR"):
        check_wandb_folders(env)
    env |= {variable: str(tmp_path / variable) for variable, _ in WANDB_FOLDERS}
    check_wandb_folders(env)
    assert all((tmp_path / variable).is_dir() for variable, _ in WANDB_FOLDERS)
