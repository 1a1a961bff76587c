"""A launch into a run folder another process trains in is refused before Hydra writes into it:
the running run's ``.hydra/`` (config.yaml, overrides.yaml) and record stay byte-identical
(issue 20 row 9). Before, Hydra wrote the refused launch's ``.hydra/`` over the running run's."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from helpers.console import run_script

from cxrnet.runs.folder_lock import run_folder_lock


def _running_run(tmp_path: Path) -> tuple[Path, dict[Path, bytes]]:
    """A run folder as a training run leaves it while it runs: .hydra/, a record, a checkpoint."""
    run_dir = tmp_path / "run"
    files = {
        run_dir / ".hydra" / "config.yaml": b"trainer:\n  max_epochs: 2\n",
        run_dir / ".hydra" / "overrides.yaml": b"- trainer.max_epochs=2\n",
        run_dir / ".hydra" / "hydra.yaml": b"hydra: {}\n",
        run_dir / "metrics.json": b'{"status": "running"}\n',
        run_dir / "checkpoints" / "last.ckpt": b"not read: the launch is refused first",
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return run_dir, files


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("cxrnet-train", lambda run: ["debug=fast", f"hydra.run.dir={run}"]),
        # A resume names the folder through its checkpoint (cxrnet.training.ddp.launch_arguments).
        ("cxrnet-train", lambda run: ["debug=fast", f"ckpt_path={run}/checkpoints/last.ckpt"]),
        (
            "cxrnet-eval",
            lambda run: [f"ckpt_path={run}/checkpoints/last.ckpt", f"hydra.run.dir={run}"],
        ),
    ],
    ids=["train run dir", "train resume", "eval into it"],
)
def test_a_launch_into_a_held_run_folder_writes_nothing_there(
    tmp_path: Path, script: str, args
) -> None:
    run_dir, files = _running_run(tmp_path)
    with run_folder_lock(run_dir):  # this test process is the training process
        done = run_script(script, args(run_dir), tmp_path)
        assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
        assert "Traceback" not in done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, done.stderr[-3000:]
        holder = f"process {os.getpid()} on host {socket.gethostname()}"
        assert f"{run_dir.resolve()} is in use: {holder}" in errors[0]
        for path, content in files.items():
            assert path.read_bytes() == content, path
        made = {p for p in run_dir.rglob("*") if p.is_file()} - set(files)
        assert made == {run_dir / ".train.lock"}


def test_a_run_folder_no_one_holds_is_not_refused(tmp_path: Path) -> None:
    run_dir, _ = _running_run(tmp_path)
    with run_folder_lock(run_dir):
        pass  # a run that ended: its lock file stays, free
    done = run_script(
        "cxrnet-train",
        ["debug=fast", f"hydra.run.dir={run_dir}", "model.net.name=no_such_net"],
        tmp_path,
    )
    # Past the folder check: the job's own config check refuses the bad value.
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "in use" not in done.stderr
    assert (run_dir / ".hydra" / "overrides.yaml").read_text().count(
        "model.net.name=no_such_net"
    ) == 1
