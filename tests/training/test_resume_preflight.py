"""A resume that fails before it starts leaves the run it tried to continue as it was (issue 20
row 5): its record is the record of a run that finished, not of one that never started."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_train

# A run trained to the end, then resumed through the console script twice: end to end.
pytestmark = pytest.mark.slow

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


def test_a_resume_that_fails_its_preflight_leaves_the_finished_record_alone(
    synthetic_root: Path, tmp_path: Path
) -> None:
    done = run_train([*FAST, f"data.root={synthetic_root}"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run_dir = run_folder(done.stdout)
    record = run_dir / "metrics.json"
    finished = record.read_bytes()
    assert b'"completed"' in finished
    last = run_dir / "checkpoints" / "last.ckpt"

    # ckpt_path=<run>/checkpoints/last.ckpt continues in that run's folder.
    bad_net = run_train(
        [*FAST, f"data.root={synthetic_root}", f"ckpt_path={last}", "model.net.name=no_such_net"],
        tmp_path,
    )
    assert bad_net.returncode == 2, bad_net.stderr[-2000:]
    assert "no_such_net" in bad_net.stderr
    assert record.read_bytes() == finished

    # A truncated copy of last.ckpt beside it: the resume cannot open it.
    truncated = last.with_name("truncated.ckpt")
    truncated.write_bytes(last.read_bytes()[:1000])
    torn = run_train([*FAST, f"data.root={synthetic_root}", f"ckpt_path={truncated}"], tmp_path)
    assert torn.returncode == 2, torn.stderr[-2000:]
    assert str(truncated) in torn.stderr
    assert record.read_bytes() == finished
