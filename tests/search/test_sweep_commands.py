"""cxrnet.runs.sweeps: the one way study scripts build and run a cxrnet-train sweep."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cxrnet.runs import sweeps
from cxrnet.runs.sweeps import (
    console_command,
    run_logged,
    script_command,
    sweep_command,
    sweep_values,
)


def test_the_command_keeps_the_order_hydra_numbers_jobs_by(tmp_path: Path) -> None:
    command = sweep_command(
        ["experiment=studies/cv_study", "data.root=/d"],
        tmp_path / "runs",
        2,
        [sweep_values("data.fold", range(3)), sweep_values("seed", [0, 1]), "x=1"],
    )
    assert command == [
        sys.executable, "-m", "cxrnet.cli.train", "-m",
        "experiment=studies/cv_study", "data.root=/d",
        f"hydra.sweep.dir={tmp_path / 'runs'}", "hydra/launcher=parallel",
        "hydra.launcher.n_jobs=2",
        "data.fold=0,1,2", "seed=0,1", "x=1",
    ]  # fmt: skip
    assert console_command(command) == ["cxrnet-train", *command[3:]]
    with pytest.raises(ValueError, match="not a cxrnet console script command"):
        console_command([sys.executable, "-m", "cxrnet.cli.nothing", "-m"])


def test_eval_and_predict_run_with_this_interpreter_and_print_as_typed() -> None:
    command = script_command("cxrnet-predict", ["ckpt_path=m.ckpt", "input=films/"])
    assert command == [
        sys.executable,
        "-m",
        "cxrnet.cli.predict",
        "ckpt_path=m.ckpt",
        "input=films/",
    ]
    assert console_command(command) == ["cxrnet-predict", "ckpt_path=m.ckpt", "input=films/"]
    assert console_command(script_command("cxrnet-eval", []))[0] == "cxrnet-eval"
    with pytest.raises(ValueError, match="unknown console script"):
        script_command("cxrnet-nothing", [])


def test_a_failing_sweep_is_logged_and_returns_its_exit_code(tmp_path: Path, capsys) -> None:
    """A real sweep whose every job is refused before any data work: fast, and non-zero."""
    command = sweep_command(
        [f"paths.log_dir={tmp_path / 'logs'}", "model.net.name=no_such_net"],
        tmp_path / "runs",
        1,
        [sweep_values("seed", [0, 1])],
    )
    log = tmp_path / "logs" / "sweep.log"  # its folder is made
    code, seconds = run_logged(command, log)
    assert code != 0 and seconds > 0
    assert "no_such_net" in log.read_text()
    printed = capsys.readouterr().out.splitlines()
    assert printed == [
        "$ " + " ".join(console_command(command)),
        f"  exit {code} after {seconds:.0f} s (log: {log})",
    ]


def test_jobs_run_offline_with_the_threads_and_environment_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, str]] = []

    def fake_run(command, **kwargs) -> subprocess.CompletedProcess[str]:
        seen.append(kwargs["env"])
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(sweeps.subprocess, "run", fake_run)
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    command = sweep_command([], tmp_path, 1)
    run_logged(command, tmp_path / "a.log", threads=1, env={"HYDRA_FULL_ERROR": "1"})
    run_logged(command, tmp_path / "b.log")
    with_threads, plain = seen
    assert with_threads["WANDB_MODE"] == plain["WANDB_MODE"] == "offline"
    assert with_threads["OMP_NUM_THREADS"] == "1" and with_threads["HYDRA_FULL_ERROR"] == "1"
    assert plain["OMP_NUM_THREADS"] == "7" and "HYDRA_FULL_ERROR" not in plain
    assert os.environ["OMP_NUM_THREADS"] == "7"  # the caller's environment is left alone
