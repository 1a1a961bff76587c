"""experiments/benchmarks/bench_scale.py: the phases it times, the slopes, the extrapolation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from helpers.experiment_scripts import EXPERIMENTS, load_script

BENCHMARKS = EXPERIMENTS / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports machine.py beside it
    return load_script("benchmarks", "bench_scale")


def _rows(phase: str, times: dict[int, float]) -> list[dict]:
    return [
        {"phase": phase, "films": n, "n": n, "wall_s": t, "cpu_s": t / 2, "peak_mb": 1.0}
        for n, t in times.items()
    ]


def test_the_slope_is_the_exponent_of_growth(bench: ModuleType) -> None:
    rows = _rows("linear", {1000: 0.5, 4000: 2.0, 16000: 8.0})
    rows += _rows("quadratic", {1000: 0.01, 4000: 0.16, 16000: 2.56})
    slopes = bench.slopes(rows)
    assert slopes["linear"]["wall_s"] == pytest.approx(1.0)
    assert slopes["linear"]["cpu_s"] == pytest.approx(1.0)
    assert slopes["quadratic"]["wall_s"] == pytest.approx(2.0)


def test_one_size_times_every_phase_on_a_small_set(
    bench: ModuleType, synthetic_root: Path, tmp_path: Path
) -> None:
    rows = bench.one_size(synthetic_root, tmp_path / "cache", 40, decode_workers=0)
    phases = [row["phase"] for row in rows]
    assert phases == [
        "discovery",
        "duplicate check, cold (hashing)",
        "duplicate check, warm",
        "split (patient)",
        "cache build, 0 workers",
        "cache open",
        "warm start",
        "warm start, verify_files=false",
        "one epoch at 64 px",
        "evaluation (+ threshold, bootstrap 1000)",
        "predict (from files)",
    ]
    films = len(list(synthetic_root.rglob("*.jpeg")))
    assert {row["films"] for row in rows} == {films}
    assert all(row["wall_s"] > 0 and row["cpu_s"] >= 0 for row in rows)


def test_the_extrapolation_scales_from_the_largest_size(bench: ModuleType) -> None:
    rows = []
    for n in (1000, 2000):
        rows += [
            {"phase": "cache build, 2 workers", "films": n, "wall_s": n / 1000},
            {"phase": "warm start", "films": n, "wall_s": n * 1e-4, "peak_mb": 100 + n * 0.01},
            {"phase": "warm start, verify_files=false", "films": n, "wall_s": n * 1e-5},
        ]
        rows[-2]["added_mb"] = n * 0.01
    costs = {"NIH ChestX-ray14": {"cpu_s_per_film": 0.01}, "MIMIC-CXR": {"missing": "x"}}
    table, found = bench.extrapolate(rows, costs)
    nih, mimic = found["NIH ChestX-ray14"], found["MIMIC-CXR"]
    assert nih["cache_gb"] == pytest.approx(112_120 * 224 * 224 / 1e9)
    assert nih["warm_start_s"] == pytest.approx(112_120 * 1e-4)
    assert nih["warm_start_trusted_s"] == pytest.approx(112_120 * 1e-5)
    assert nih["start_memory_mb"] == pytest.approx(100 + 112_120 * 0.01)
    assert mimic["decode_cpu_s_per_film"] is None
    assert "not measured" in table  # MIMIC's build: no decode cost, no number


@pytest.mark.slow
def test_the_quick_run_prints_the_tables(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [
            *(sys.executable, str(BENCHMARKS / "bench_scale.py"), "--quick"),
            *("--work", str(tmp_path), "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "| one epoch at 64 px |" in done.stdout and "| MIMIC-CXR | 377,110 |" in done.stdout
    result = json.loads(out.read_text())
    assert sorted({row["films"] for row in result["rows"]}) == [500, 1000, 2000]
    assert set(result["slopes"]) >= {"discovery", "warm start", "predict (from files)"}


def test_data_only_stops_at_the_warm_start(
    bench: ModuleType, synthetic_root: Path, tmp_path: Path
) -> None:
    rows = bench.one_size(synthetic_root, tmp_path / "cache", 40, 0, data_only=True)
    assert rows[-1]["phase"] == "warm start, verify_files=false" and len(rows) == 8
