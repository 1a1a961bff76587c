"""A run folder trains in one process at a time: a second resume of the same run is refused at
once (exit 2) naming the holder, and leaves the running run's record alone."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import pytest
from helpers.console import QUICK, console_script, run_folder, run_train, script_env

TESTS = Path(__file__).resolve().parents[1]  # tests/, for helpers on PYTHONPATH


@pytest.mark.slow  # two trainings, one held at a gate: end to end
def test_a_second_resume_of_a_training_run_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    reached, release = tmp_path / "reached", tmp_path / "release"
    first = subprocess.Popen(
        [
            *console_script("cxrnet-train"),
            *QUICK,
            "trainer.max_epochs=2",
            f"hydra.run.dir={run_dir}",
            "+callbacks.gate._target_=helpers.gate.HoldAtEpoch",
            "+callbacks.gate.epoch=1",
            f"+callbacks.gate.reached={reached}",
            f"+callbacks.gate.release={release}",
        ],
        cwd=tmp_path,
        env=script_env(tmp_path, PYTHONPATH=str(TESTS)),  # for helpers.gate
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while not reached.exists():
            if first.poll() is not None or time.monotonic() > deadline:
                first.kill()
                raise AssertionError(f"never reached epoch 1:\n{first.communicate()[0][-3000:]}")
            time.sleep(0.2)
        last = run_dir / "checkpoints" / "last.ckpt"
        assert last.is_file()
        record = (run_dir / "metrics.json").read_bytes()
        assert json.loads(record)["status"] == "running"
        hydra_files = {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}

        # The first is held at epoch 1 until released: the second cannot have waited for it.
        second = run_train([*QUICK, "trainer.max_epochs=2", f"ckpt_path={last}"], tmp_path)
        assert first.poll() is None
        assert second.returncode == 2, (second.stdout + second.stderr)[-3000:]
        assert "Traceback" not in second.stderr
        errors = [line for line in second.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, second.stderr[-3000:]
        assert (
            f"{run_dir} is in use: process {first.pid} on host {socket.gethostname()}"
            in (errors[0])
        )
        assert (run_dir / "metrics.json").read_bytes() == record
        # Refused before Hydra wrote its .hydra/ (config.yaml, overrides.yaml) over the first's.
        assert {p: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == hydra_files
    finally:
        release.touch()
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["status"] == "completed"

    # Once it has ended the folder is free: a resume of the finished run trains on.
    resumed = run_train([*QUICK, "trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert run_folder(resumed.stdout) == run_dir.resolve()
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["paths"]["resumed_from"] == str(last.resolve())
