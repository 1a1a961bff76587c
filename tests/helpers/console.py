"""Run cxrnet's console scripts as a user would: a subprocess, its exit code and its output."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

# Small and quick everywhere: tiny images, no worker processes, offline W&B.
QUICK = [
    "debug=fast",
    "trainer.limit_train_batches=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
]


# Where a console script is not installed beside the interpreter, its module runs instead.
MODULES = {
    "cxrnet-train": "cxrnet.cli.train",
    "cxrnet-search": "cxrnet.cli.search",
    "cxrnet-eval": "cxrnet.cli.evaluate",
    "cxrnet-predict": "cxrnet.cli.predict",
    "cxrnet-export": "cxrnet.cli.export",
    "cxrnet-ensemble": "cxrnet.cli.ensemble",
    "cxrnet-cache": "cxrnet.cli.cache",
}


def console_script(name: str) -> list[str]:
    script = Path(sys.executable).with_name(name)
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", MODULES[name]]


def script_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        # A test run under Slurm or inside another cxrnet job must not inherit its folder.
        if key == "SLURM_CONF"
        or not key.startswith(("SLURM_", "CXRNET_RUN_STAMP", "CXRNET_DDP_JOB"))
    }
    return env | {
        "CXRNET_CACHE_DIR": str(tmp_path / "cache"),
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        **extra,
    }


def start_train(args: Sequence[str], tmp_path: Path, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*console_script("cxrnet-train"), *args],
        cwd=tmp_path,
        env=script_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **popen,  # type: ignore[arg-type]
    )


def run_script(
    name: str,
    args: Sequence[str],
    tmp_path: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run console script ``name`` in ``tmp_path`` to the end; ``env`` adds to script_env."""
    return subprocess.run(
        [*console_script(name), *args],
        cwd=tmp_path,
        env=script_env(tmp_path) | (env or {}),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_train(
    args: Sequence[str], tmp_path: Path, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_script("cxrnet-train", args, tmp_path, timeout, env)


def run_folder(stdout: str) -> Path:
    """The run folder the training summary names."""
    return Path(stdout.split("run folder: ")[-1].split()[0])
