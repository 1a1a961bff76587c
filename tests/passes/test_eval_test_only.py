"""``cxrnet-eval`` on labelled data that is only a test set (issue 20 row 10, issue 18 item 4's
first part): ``<root>/test/{NORMAL,PNEUMONIA}``, ``<root>/{NORMAL,PNEUMONIA}`` (an external site),
a manifest whose rows are all ``split=test``, or one with labels and no split column. Each is
scored as a test set at the checkpoint's stored threshold, and gives the metrics the same films
give as the ``test/`` split of the training data."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_script, run_train

# Each case trains once, then scores through the console script: end to end.
pytestmark = pytest.mark.slow

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path) -> dict:
    root = tmp_path_factory.mktemp("eval_test_only")
    done = run_train(
        [*FAST, f"data.root={synthetic_root}", f"paths.log_dir={root / 'logs'}"],
        root,
        env={"CXRNET_CACHE_DIR": str(root / "cache")},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((run_folder(done.stdout) / "metrics.json").read_text())
    return {"ckpt": record["paths"]["best_checkpoint"], "record": record}


def _eval(trained: dict, tmp_path: Path, *args: str) -> tuple[int, str, Path | None]:
    done = run_script(
        "cxrnet-eval",
        [f"ckpt_path={trained['ckpt']}", "report.resamples=20", f"paths.log_dir={tmp_path}", *args],
        tmp_path,
        env={"CXRNET_CACHE_DIR": str(tmp_path / "cache")},
    )
    output = done.stdout + done.stderr
    return done.returncode, output, run_folder(done.stdout) if done.returncode == 0 else None


def _test_films(synthetic_root: Path) -> dict[str, list[Path]]:
    test = synthetic_root / "test"
    return {cls: sorted((test / cls).iterdir()) for cls in ("NORMAL", "PNEUMONIA")}


def _copy(films: dict[str, list[Path]], folder: Path) -> None:
    for cls, paths in films.items():
        (folder / cls).mkdir(parents=True)
        for path in paths:
            shutil.copy2(path, folder / cls / path.name)


def _manifest(films: dict[str, list[Path]], path: Path, split: str | None) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", *(["split"] if split else [])])
        for cls, paths in films.items():
            for film in paths:
                writer.writerow([str(film), cls, *([split] if split else [])])
    return path


def _layout(kind: str, synthetic_root: Path, where: Path) -> Path:
    films = _test_films(synthetic_root)
    if kind == "test_folder":
        _copy(films, where / "site" / "test")
        return where / "site"
    if kind == "class_folders":
        _copy(films, where / "site")
        return where / "site"
    return _manifest(films, where / "site.csv", "test" if kind == "manifest_test_rows" else None)


@pytest.fixture(scope="module")
def reference(trained: dict, tmp_path_factory: pytest.TempPathFactory, synthetic_root: Path):
    """The same films scored as the test/ split of the training data."""
    tmp = tmp_path_factory.mktemp("reference")
    code, output, run_dir = _eval(trained, tmp, "data=chest_xray", f"data.root={synthetic_root}")
    assert code == 0, output[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())["metrics"]


@pytest.mark.parametrize(
    "kind", ["test_folder", "class_folders", "manifest_test_rows", "manifest_no_split"]
)
def test_a_test_only_source_is_scored_as_a_test_set(
    kind: str, trained: dict, reference: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    source = _layout(kind, synthetic_root, tmp_path)
    code, output, run_dir = _eval(trained, tmp_path, "data=chest_xray", f"data.root={source}")
    assert code == 0, output[-3000:]
    assert "no training images" not in output
    metrics = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    n = sum(len(films) for films in _test_films(synthetic_root).values())
    with (run_dir / "predictions_test.csv").open() as handle:
        assert len(list(csv.DictReader(handle))) == n
    scored = sorted(key for key in reference if key.startswith("test/") and "_ci_" not in key)
    assert "test/auroc" in scored
    for key in scored:
        assert metrics[key] == pytest.approx(reference[key], abs=1e-6), key
    # Only the stored operating point (chosen on the training run's val split) is reported.
    val_keys = {key for key in metrics if key.startswith("val/")}
    assert val_keys <= {"val/threshold", "val/temperature"}
    assert metrics["val/threshold"] == reference["val/threshold"]
    card = (run_dir / "report.md").read_text()
    assert f"data.root from the command line ({source}" in card


def test_val_or_a_new_threshold_on_a_test_only_source_is_a_clear_error(
    trained: dict, synthetic_root: Path, tmp_path: Path
) -> None:
    source = _layout("class_folders", synthetic_root, tmp_path)
    for args, said in (
        (["stages=[val,test]"], "stages=[test]"),
        (["threshold.rechoose=true"], "threshold.rechoose=false"),
    ):
        code, output, _ = _eval(trained, tmp_path, "data=chest_xray", f"data.root={source}", *args)
        assert code == 2, output[-3000:]
        assert "has no val split" in output and said in output
        assert "Traceback" not in output
