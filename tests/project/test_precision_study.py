"""experiments/benchmarks/precision_study.py: reading the jobs back, pooling seeds, the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.experiment_scripts import load_script

from cxrnet.runs import RunRecord, RunStatus, write_record

study = load_script("benchmarks", "precision_study")


def write_jobs(runs: Path, scores: dict[str, dict[int, tuple[float, float]]]) -> None:
    """One job folder per (precision, seed) with its record, as the sweep leaves them."""
    number = 0
    for precision, by_seed in scores.items():
        for seed, (val, held_out) in by_seed.items():
            folder = runs / str(number)
            folder.mkdir(parents=True)
            write_record(
                RunRecord(
                    status=RunStatus.COMPLETED,
                    run_dir=str(folder),
                    overrides=(
                        "experiment=notebook_baseline",
                        f"seed={seed}",
                        f"trainer.precision={precision}",
                    ),
                    metrics={"val/auroc": val, "test/auroc": held_out},
                    duration_s=60.0 * (number + 1),
                )
            )
            number += 1


def results_of(runs: Path) -> dict:
    return {"epochs": 3, "runs": study.collect(runs)}


def test_jobs_are_read_back_by_precision_and_seed(tmp_path: Path) -> None:
    write_jobs(
        tmp_path / "runs",
        {"32-true": {1: (0.98, 0.97), 0: (0.99, 0.96)}, "bf16-mixed": {0: (0.97, 0.95)}},
    )
    table = study.collect(tmp_path / "runs")
    assert [row["seed"] for row in table["32-true"]] == [0, 1]
    assert table["32-true"][0]["val_auroc"] == 0.99 and table["32-true"][0]["holdout_auroc"] == 0.96
    assert table["bf16-mixed"][0]["holdout_auroc"] == 0.95


def test_a_job_that_did_not_complete_stops_the_study(tmp_path: Path) -> None:
    write_jobs(tmp_path / "runs", {"32-true": {0: (0.99, 0.96)}})
    record = json.loads((tmp_path / "runs" / "0" / "metrics.json").read_text())
    record["status"] = "failed"
    (tmp_path / "runs" / "0" / "metrics.json").write_text(json.dumps(record))
    with pytest.raises(SystemExit, match="did not complete"):
        study.collect(tmp_path / "runs")


def test_the_report_pairs_seeds_and_says_where_bf16_is_consistently_lower(tmp_path: Path) -> None:
    # Validation: mixed signs around zero. Held out: bf16 lower by 0.002 for every seed.
    write_jobs(
        tmp_path / "runs",
        {
            "32-true": {0: (0.990, 0.9800), 1: (0.985, 0.9795), 2: (0.988, 0.9798)},
            "bf16-mixed": {0: (0.991, 0.9780), 1: (0.984, 0.9775), 2: (0.988, 0.9778)},
        },
    )
    text = study.report(results_of(tmp_path / "runs"))
    val_line, val_pairs, held_line, held_pairs = [
        line for line in text.splitlines() if line.lstrip().startswith("-")
    ]
    assert val_line.startswith("- val AUROC") and "within 2× seed noise" in val_line
    assert "+0.0010, -0.0010, +0.0000" in val_pairs and "1 of 3 seeds" in val_pairs
    assert held_line.startswith("- held-out AUROC") and "OUTSIDE 2× seed noise" in held_line
    assert "lower with bf16 for 3 of 3 seeds" in held_pairs


def test_later_seeds_pool_with_an_earlier_study_and_clashes_are_refused(tmp_path: Path) -> None:
    write_jobs(tmp_path / "a", {"32-true": {0: (0.99, 0.98)}, "bf16-mixed": {0: (0.98, 0.97)}})
    write_jobs(tmp_path / "b", {"32-true": {1: (0.97, 0.96)}, "bf16-mixed": {1: (0.96, 0.95)}})
    earlier = tmp_path / "earlier.json"
    earlier.write_text(json.dumps(results_of(tmp_path / "a")))
    pooled = study.pooled(results_of(tmp_path / "b"), [earlier])
    assert [row["seed"] for row in pooled["runs"]["bf16-mixed"]] == [0, 1]
    assert pooled["pooled_from"] == [str(earlier)]

    with pytest.raises(SystemExit, match=r"seeds \[0\] at 32-true are in both studies"):
        study.pooled(results_of(tmp_path / "a"), [earlier])
    other = json.loads(earlier.read_text()) | {"epochs": 6}
    earlier.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="6 epochs, this study 3"):
        study.pooled(results_of(tmp_path / "b"), [earlier])
