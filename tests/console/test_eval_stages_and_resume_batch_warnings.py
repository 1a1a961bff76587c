"""What a user expects to be told (issue 20, "Also"): cxrnet-eval with stages=[] is an error, not
an empty report with exit 0; a resume with another data.batch_size warns that it is not exact."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_script, run_train

# A run trained to the end, then evaluated and resumed through the console script: end to end.
pytestmark = pytest.mark.slow

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    folder = tmp_path_factory.mktemp("trained")
    done = run_train([*FAST, f"data.root={synthetic_root}", f"paths.log_dir={folder}"], folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_folder(done.stdout)


def test_eval_with_no_stages_is_an_error(tmp_path, trained) -> None:
    # Before: an empty report, exit 0.
    done = run_script(
        "cxrnet-eval",
        [
            f"ckpt_path={trained / 'checkpoints' / 'last.ckpt'}",
            "stages=[]",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 2, done.stderr[-3000:]
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "stages=[] scores nothing" in line


@pytest.mark.parametrize("batch_size", [None, 3])
def test_a_resume_with_another_batch_size_warns_at_start(
    tmp_path, trained, synthetic_root, batch_size
) -> None:
    stored = (trained / "config.yaml").read_text().split("batch_size: ")[1].split()[0]
    last = trained / "checkpoints" / "last.ckpt"
    args = [*FAST, f"data.root={synthetic_root}", f"ckpt_path={last}", "trainer.max_epochs=2"]
    if batch_size is not None:
        assert str(batch_size) != stored
        args.append(f"data.batch_size={batch_size}")
    done = run_train(args, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    warnings = [line for line in done.stderr.splitlines() if "not an exact continuation" in line]
    if batch_size is None:
        assert warnings == []
    else:
        # Before: no word of it.
        (line,) = warnings
        assert line.startswith(f"warning: data.batch_size={batch_size} differs from the {stored}")
