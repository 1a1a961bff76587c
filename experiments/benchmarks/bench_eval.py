"""Evaluation benchmark: threshold choice and the patient bootstrap at large prediction counts.

    python experiments/benchmarks/bench_eval.py            # about 2-3 minutes on 2 cores
    python experiments/benchmarks/bench_eval.py --quick    # a smoke run, numbers are rough

Synthetic predictions (logistic scores, 1-3 films per patient, half pneumonia patients):
(a) ``choose_threshold`` (youden, f1, sensitivity, specificity) at 10k, 100k and 1M predictions,
    and the previous per-candidate algorithm (kept below, verbatim in substance) where it ends
    in reasonable time (8k, 32k); both on the same inputs, results compared for equality.
(b) The report's patient bootstrap (``bootstrap_weighted`` with the report's metrics: metrics
    at the threshold and at 0.5, AUROC, AUPRC) with 1000 resamples at 32k and 300k predictions,
    on 1 and 2 threads, and the previous loop over patients per resample at 32k (fewer
    resamples, scaled to 1000); intervals compared for equality.

Wall time is the best of ``--repeat`` runs; CPU time (this process, all threads) is shown too,
since other jobs on a shared machine stretch wall time but not CPU time. Prints a markdown
table and writes the measurements to ``--out`` as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from machine import run_facts  # experiments/benchmarks/machine.py, beside this script

from cxrnet.evaluation.bootstrap import bootstrap_weighted, group_indices
from cxrnet.evaluation.report import _resampled_scores, _scores
from cxrnet.evaluation.thresholds import binary_metrics_at, choose_threshold

CRITERIA = ("youden", "f1", "sensitivity", "specificity")


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    films = rng.integers(1, 4, n)
    patient = np.repeat(np.arange(n), films)[:n]
    labels = rng.integers(0, 2, patient[-1] + 1)[patient]
    logits = 1.5 * (2 * labels - 1) + rng.normal(0, 1.0, patient[-1] + 1)[patient]
    scores = 1 / (1 + np.exp(-(logits + rng.normal(0, 0.8, n))))
    return np.round(scores, 6), labels, [f"p{i}" for i in patient]  # rounding: some ties


# ------------------------------------------------- the previous algorithms, for the "before" rows


def old_choose_threshold(probabilities: np.ndarray, labels: np.ndarray, criterion: str) -> float:
    """The per-candidate algorithm this benchmark replaced (a confusion matrix per candidate)."""
    candidates = np.unique(np.concatenate([probabilities, [0.5]]))
    table = [(float(t), binary_metrics_at(probabilities, labels, float(t))) for t in candidates]
    if criterion == "sensitivity":
        return max(t for t, m in table if m["recall"] >= 0.95)
    if criterion == "specificity":
        kept = [t for t, m in table if m["specificity"] >= 0.95]
        return min(kept) if kept else float(np.nextafter(candidates[-1], np.inf))
    best_score, best = -np.inf, 0.5
    for threshold, m in table:
        score = m["recall"] + m["specificity"] - 1 if criterion == "youden" else m["f1"]
        better = score > best_score + 1e-12
        tie = abs(score - best_score) <= 1e-12 and abs(threshold - 0.5) < abs(best - 0.5)
        if better or tie:
            best_score, best = score, threshold
    return best


def old_bootstrap(
    probabilities: np.ndarray, labels: np.ndarray, patients: list[str], resamples: int
) -> dict[str, tuple[float, float]]:
    """The loop this benchmark replaced: per resample, concatenate the drawn patients' films."""
    members = group_indices(patients, len(labels))
    rng = np.random.default_rng(0)
    samples: dict[str, list[float]] = {}
    for _ in range(resamples):
        drawn = rng.integers(0, len(members), len(members))
        idx = np.concatenate([members[g] for g in drawn])
        for name, value in _scores(probabilities[idx], labels[idx], 0.5).items():
            samples.setdefault(name, []).append(value)
    intervals = {}
    for name, values in samples.items():
        array = np.asarray(values)
        array = array[np.isfinite(array)]
        intervals[name] = tuple(float(v) for v in np.percentile(array, [2.5, 97.5]))
    return intervals


# ------------------------------------------------------------------------------------ timing


def timed(fn: Callable[[], object], repeat: int) -> tuple[float, float, object]:
    """(best wall seconds, CPU seconds of that run, result)."""
    best = (float("inf"), 0.0, None)
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        if wall < best[0]:
            best = (wall, cpu, result)
    return best


def threshold_rows(sizes: list[int], old_sizes: list[int], repeat: int) -> list[dict]:
    rows = []
    for n in sorted(set(sizes) | set(old_sizes)):
        p, y, _ = synthetic(n)
        for criterion in CRITERIA:
            wall, cpu, new = timed(partial(choose_threshold, p, y, criterion), repeat)
            row = {"step": "threshold", "criterion": criterion, "n": n, "new_s": wall}
            row["new_cpu_s"] = cpu
            if n in old_sizes:
                old_wall, _, old = timed(partial(old_choose_threshold, p, y, criterion), 1)
                row |= {"old_s": old_wall, "identical": old == new}
            rows.append(row)
            print(row, file=sys.stderr)
    return rows


def bootstrap_rows(sizes: list[int], old_size: int, old_resamples: int, repeat: int) -> list[dict]:
    rows = []
    for n in sizes:
        p, y, patients = synthetic(n)
        for workers in (1, 2):
            scores = _resampled_scores(p, y, 0.5)
            run = partial(bootstrap_weighted, scores, n, patients, 1000, 0, workers=workers)
            wall, cpu, _ = timed(run, repeat)
            row = {"step": "bootstrap 1000", "workers": workers, "n": n, "new_s": wall}
            row["new_cpu_s"] = cpu
            if n == old_size and workers == 1:
                old_wall, _, _ = timed(partial(old_bootstrap, p, y, patients, old_resamples), 1)
                same = bootstrap_weighted(_resampled_scores(p, y, 0.5), n, patients, old_resamples)
                old = old_bootstrap(p, y, patients, old_resamples)
                row |= {
                    "old_s": old_wall * 1000 / old_resamples,
                    "old_note": f"{old_resamples} resamples timed, scaled to 1000",
                    "identical": same == old,
                }
            rows.append(row)
            print(row, file=sys.stderr)
    return rows


def render(rows: list[dict]) -> str:
    lines = [
        "| step | n | criterion / threads | before (s) | after (s) | after CPU (s) | identical |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for row in rows:
        what = row.get("criterion", row.get("workers"))
        before = f"{row['old_s']:.2f}" if "old_s" in row else "-"
        same = str(row.get("identical", "-"))
        lines.append(
            f"| {row['step']} | {row['n']:,} | {what} | {before} | {row['new_s']:.3f} "
            f"| {row['new_cpu_s']:.3f} | {same} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("bench_eval.json"))
    args = parser.parse_args()
    if args.quick:
        rows = threshold_rows([10_000], [2_000], 1) + bootstrap_rows([8_000], 8_000, 20, 1)
    else:
        rows = threshold_rows([10_000, 100_000, 1_000_000], [8_000, 32_000], args.repeat)
        rows += bootstrap_rows([32_000, 300_000], 32_000, 100, 1)
    table = render(rows)
    print(table)
    args.out.write_text(
        json.dumps(
            {
                **run_facts(),
                "quick": args.quick,
                "rows": rows,
                "table": table,
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
