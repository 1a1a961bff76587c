"""Where the checkpoint and the threshold are chosen (issue 20 row 15): ``experiment=best``
chooses on a patient-grouped split of train+val, not on the official 8+8 val films; a run whose
val split has too few films per class warns on the console when it starts; report.md states
which split chose the checkpoint and which the threshold, with their sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.console import QUICK, run_folder, run_train

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic

FAST = [*QUICK, "model.net.widths=[4,4,8,8]", "model.net.hidden=8", "trainer.max_epochs=1"]
WARNING = "fewer than data.min_val_per_class=20 of each class"


@pytest.fixture(scope="module")
def small_official_val(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like the Kaggle layout: a large train folder and a val folder of 8 + 8 films."""
    spec = SyntheticSpec(
        n_train=240, n_val=16, n_test=16, pneumonia_fraction=0.5, min_size=40, max_size=56, seed=5
    )
    return generate_synthetic(tmp_path_factory.mktemp("small_val") / "data", spec)


def _train(data: Path, tmp_path: Path, *args: str) -> tuple[str, str]:
    done = run_train([*FAST, f"data.root={data}", f"paths.log_dir={tmp_path}", *args], tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    return output, (run_folder(done.stdout) / "report.md").read_text()


@pytest.mark.slow  # a training run through the console script
def test_a_small_val_split_warns_at_start_and_the_card_names_it(
    small_official_val: Path, tmp_path: Path
) -> None:
    output, card = _train(small_official_val, tmp_path)
    (line,) = [line for line in output.splitlines() if WARNING in line]
    assert "the val split (data.split=official) has 8 NORMAL, 8 PNEUMONIA films" in line
    assert "use data.split=patient" in line
    # At start: before the first training epoch, not only in the model card at the end.
    assert output.index(WARNING) < output.index("Epoch 0")
    assert (
        "Checkpoint chosen on: the val split (the official val folder as given; "
        "16 films: 8 NORMAL, 8 PNEUMONIA), by the best val/auroc." in card
    )
    assert "Threshold chosen on: the same val split (threshold.criterion=youden)" in card


@pytest.mark.slow  # a training run through the console script
def test_a_patient_split_of_the_larger_set_does_not_warn(
    small_official_val: Path, tmp_path: Path
) -> None:
    output, card = _train(small_official_val, tmp_path, "data.split=patient")
    assert WARNING not in output
    assert "Checkpoint chosen on: the val split (data.split=patient, val_fraction 0.2 from " in card
    assert "Threshold chosen on: the same val split" in card


def test_best_chooses_its_checkpoint_on_a_patient_split(compose_cfg) -> None:
    best = compose_cfg("train", ["experiment=best"])
    assert (best.data.split, best.data.val_fraction) == ("patient", 0.2)
    assert best.data.min_val_per_class == 20
    # best_cv keeps its patient-grouped folds.
    assert compose_cfg("train", ["experiment=best_cv"]).data.split == "kfold"
