"""cxrnet-train's user mistakes are one ``error:`` line and exit 2, not a traceback with exit 1
(issue 20 row 14): a log folder that is a file, a blocked ``_target_``."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import run_train


def _mistakes(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    logs = f"paths.log_dir={tmp_path / 'logs'}"
    return {
        # Before: Hydra's NotADirectoryError traceback while it made the run folder, exit 1.
        "log dir a file": ([f"paths.log_dir={blocker}"], f"{blocker} is a file, not a folder"),
        "run dir under a file": (
            [logs, f"hydra.run.dir={blocker / 'run'}"],
            f"{blocker} is a file, not a folder",
        ),
        # Before: Hydra's "Error executing job ... is blocklisted" over five lines, exit 1.
        "optimizer os.system": (
            [logs, "model.optimizer._target_=os.system"],
            "model.optimizer._target_=os.system is blocked",
        ),
        "callback os.remove": (
            [logs, "+callbacks.evil._target_=os.remove"],
            "callbacks.evil._target_=os.remove is blocked",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "log dir a file",
        "run dir under a file",
        # Blocked _target_s: console runs the slow tier keeps (the default under 5 minutes).
        pytest.param("optimizer os.system", marks=pytest.mark.slow),
        pytest.param("callback os.remove", marks=pytest.mark.slow),
    ],
)
def test_a_train_mistake_is_one_error_line_and_exit_2(tmp_path, case) -> None:
    args, message = _mistakes(tmp_path)[case]
    done = run_train(["debug=fast", *args], tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert message in line
    if "blocked" in message:
        assert "set " in line and "the class that setting builds" in line


def test_full_error_keeps_the_traceback_of_an_unmakeable_log_dir(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    done = run_train(
        ["debug=fast", f"paths.log_dir={blocker}"], tmp_path, env={"HYDRA_FULL_ERROR": "1"}
    )
    assert done.returncode != 0
    assert "Traceback" in done.stderr and "NotADirectoryError" in done.stderr
