"""A study script's ``cxrnet-train -m`` sweep: the command, and running it into a log file.

The runners in ``experiments/`` each start sweeps of parallel jobs and keep what they ran::

    command = sweep_command(["experiment=studies/cv_study", f"data.root={data}"], out / "runs", 2,
                            [sweep_values("seed", [0, 1, 2])])
    code, seconds = run_logged(command, out / "sweep.log", threads=1)

The command runs ``python -m cxrnet.cli.train`` with this interpreter, so it needs no console
script on the PATH; ``console_command`` is the same command as a user types it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

CONSOLE_SCRIPT = "cxrnet-train"
_MODULE = ("-m", "cxrnet.cli.train")
# The console scripts a study runs besides training, by their module under cxrnet.cli.
_SCRIPTS = {"cxrnet.cli.train": CONSOLE_SCRIPT, "cxrnet.cli.evaluate": "cxrnet-eval",
            "cxrnet.cli.predict": "cxrnet-predict"}  # fmt: skip


def sweep_values(key: str, values: Iterable[object]) -> str:
    """The override that sweeps ``key`` over ``values``: ``seed=0,1,2``."""
    return f"{key}=" + ",".join(str(value) for value in values)


def sweep_command(
    settings: Sequence[str], sweep_dir: Path | str, n_jobs: int, swept: Sequence[str] = ()
) -> list[str]:
    """``cxrnet-train -m <settings> <sweep folder and parallel launcher> <swept>``.

    The order of the overrides is kept: Hydra numbers the jobs by it, so a study that changes
    it would put other jobs in its existing job folders.
    """
    return [
        sys.executable,
        *_MODULE,
        "-m",
        *settings,
        f"hydra.sweep.dir={sweep_dir}",
        "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={n_jobs}",
        *swept,
    ]


def script_command(script: str, arguments: Sequence[str]) -> list[str]:
    """``cxrnet-eval`` or ``cxrnet-predict`` with ``arguments``, run with this interpreter as
    ``sweep_command`` runs training (no console script needed on the PATH)."""
    modules = {name: module for module, name in _SCRIPTS.items()}
    if script not in modules:
        raise ValueError(f"unknown console script {script!r}; known: {sorted(modules)}")
    return [sys.executable, "-m", modules[script], *arguments]


def console_command(command: Sequence[str]) -> list[str]:
    """A ``sweep_command`` or ``script_command`` as a user types it: ``["cxrnet-train", ...]``."""
    if len(command) < 3 or command[1] != "-m" or command[2] not in _SCRIPTS:
        raise ValueError(f"not a cxrnet console script command: {list(command[:3])}")
    return [_SCRIPTS[command[2]], *command[3:]]


def run_logged(
    command: Sequence[str],
    log_path: Path,
    *,
    threads: int | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[int, float]:
    """Run ``command`` with its output into ``log_path``; its exit code and wall seconds.

    W&B stays offline. ``threads`` sets OMP_NUM_THREADS for every job: jobs side by side then
    share the cores instead of each starting a thread per core. ``env`` adds to the environment.
    """
    print("$ " + " ".join(console_command(command)), flush=True)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "WANDB_MODE": "offline"}
    if threads is not None:
        environment["OMP_NUM_THREADS"] = str(threads)
    environment |= env or {}
    started = time.time()
    with log_path.open("w") as log:
        code = subprocess.run(
            list(command), stdout=log, stderr=subprocess.STDOUT, env=environment
        ).returncode
    elapsed = time.time() - started
    print(f"  exit {code} after {elapsed:.0f} s (log: {log_path})", flush=True)
    return code, elapsed
