"""``cxrnet-ensemble`` on a sweep folder that was copied or moved (issue 20 row 6): the members
are the checkpoints in the folder it reads, wherever the sweep was trained."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.console import QUICK, run_script, run_train

from cxrnet.models.ensemble_manifest import member_paths, read_manifest


@pytest.fixture(scope="module")
def trained_sweep(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> Path:
    """A 2-fold ``experiment=best_cv`` sweep, its ensemble folder removed."""
    root = tmp_path_factory.mktemp("relocated")
    args = ["-m", "experiment=best_cv", *QUICK, f"data.root={synthetic_root}"]
    args += [
        "data.holdout_fraction=0",
        "data.num_folds=2",
        "report.resamples=20",
        f"paths.log_dir={root / 'logs'}",
    ]
    done = run_train(args, root)
    assert done.returncode == 0, done.stderr[-3000:]
    (sweep_dir,) = (root / "logs" / "debug" / "multiruns").iterdir()
    shutil.rmtree(sweep_dir / "ensemble")
    return sweep_dir


def _members_inside(manifest_path: Path, sweep_dir: Path) -> None:
    members = [m.resolve() for m in member_paths(read_manifest(manifest_path), manifest_path)]
    assert [m.parents[1].name for m in members] == ["0", "1"]
    for member in members:
        assert member.is_file()
        assert member.is_relative_to(sweep_dir.resolve()), f"{member} is outside {sweep_dir}"


@contextlib.contextmanager
def _moved(source: Path, target: Path) -> Iterator[Path]:
    """``source`` at ``target`` for a while (the module's sweep is put back for the next test)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    try:
        yield target
    finally:
        shutil.rmtree(target / "ensemble", ignore_errors=True)
        shutil.move(target, source)


@pytest.mark.slow
@pytest.mark.parametrize("original", ["kept", "gone"])
def test_an_ensemble_of_a_copied_sweep_uses_the_copy(
    trained_sweep: Path, tmp_path: Path, original: str
) -> None:
    copy = Path(shutil.copytree(trained_sweep, tmp_path / "copy"))
    # The copy's records still name the checkpoints where the sweep was trained.
    assert str(trained_sweep) in (copy / "0" / "metrics.json").read_text()
    with contextlib.ExitStack() as stack:
        if original == "gone":  # deleted or renamed: its checkpoints are not where they were
            stack.enter_context(_moved(trained_sweep, tmp_path / "renamed"))
        done = run_script("cxrnet-ensemble", [str(copy)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _members_inside(copy / "ensemble" / "ensemble.json", copy)


@pytest.mark.slow
def test_an_ensemble_of_a_moved_sweep_finds_its_folds(trained_sweep: Path, tmp_path: Path) -> None:
    with _moved(trained_sweep, tmp_path / "elsewhere" / "sweep") as moved:
        done = run_script("cxrnet-ensemble", [str(moved)], tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        _members_inside(moved / "ensemble" / "ensemble.json", moved)
