"""Which data ``cxrnet-eval`` scores and where it caches it (issue 20 rows 11 and 12): this
machine's cache folder, never the training machine's; the checkpoint's own data unless the
command line names other data; and the report's header says which data it scored."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_script, run_train

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    """A tiny run whose checkpoint stores a cache folder that no longer exists as a folder."""
    root = tmp_path_factory.mktemp("eval_data")
    training_cache = root / "training-machine-cache"
    done = run_train(
        [*FAST, f"data.root={synthetic_root}", f"paths.log_dir={root / 'logs'}"],
        root,
        env={"CXRNET_CACHE_DIR": str(training_cache)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = run_folder(done.stdout)
    record = json.loads((run_dir / "metrics.json").read_text())
    # The training machine's cache is gone here, and cannot be made again (a file holds its name).
    shutil.rmtree(training_cache)
    training_cache.write_text("not a folder")
    return {"root": root, "record": record, "training_cache": training_cache}


def _evaluate(trained: dict, tmp_path: Path, *args: str) -> tuple[dict, str]:
    ckpt = trained["record"]["paths"]["best_checkpoint"]
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={ckpt}", "report.resamples=20", f"paths.log_dir={tmp_path}", *args],
        tmp_path,
        env={"CXRNET_CACHE_DIR": str(tmp_path / "this-machine-cache")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert trained["training_cache"].is_file(), "the training machine's cache was touched"
    run_dir = run_folder(done.stdout)
    return json.loads((run_dir / "metrics.json").read_text()), (run_dir / "report.md").read_text()


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_eval_caches_in_this_machines_cache_folder(trained: dict, tmp_path: Path) -> None:
    """Row 11: the checkpoint's cache_dir (gone, unmakeable) is not this machine's setting."""
    record, card = _evaluate(trained, tmp_path)
    assert list((tmp_path / "this-machine-cache" / "images").iterdir())
    assert record["metrics"]["test/auroc"] == pytest.approx(
        trained["record"]["metrics"]["test/auroc"], abs=1e-6
    )
    assert "Data scored: the checkpoint's own data" in card


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_a_data_setting_without_data_root_scores_the_checkpoints_own_data(
    trained: dict, tmp_path: Path
) -> None:
    """Row 12: ``+data.cache_dir=...`` used to score the built-in synthetic set instead."""
    elsewhere = tmp_path / "chosen-cache"
    record, card = _evaluate(trained, tmp_path, f"+data.cache_dir={elsewhere}")
    assert list(elsewhere.iterdir()), "the cache folder given on the command line"
    assert not (tmp_path / "this-machine-cache" / "synthetic").exists(), "no synthetic data"
    assert record["metrics"]["test/auroc"] == pytest.approx(
        trained["record"]["metrics"]["test/auroc"], abs=1e-6
    )
    assert "Data scored: the checkpoint's own data" in card


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_the_report_says_which_data_it_scored(
    trained: dict, tmp_path: Path, synthetic_root: Path
) -> None:
    _, card = _evaluate(trained, tmp_path, "data=chest_xray", f"data.root={synthetic_root}")
    assert f"Data scored: data.root from the command line ({synthetic_root}" in card
