"""Fold ensembles and light test-time augmentation on the held-out set.

    python experiments/cv_studies/tta.py logs/cv_studies/runs/baseline/baseline

For every completed fold job of one variant: its best checkpoint scores the held-out films (the
files of its ``predictions_test.csv``) as they are and mirrored left-right (the recipe trains
with horizontal flips), and the two probabilities are averaged. Per seed it reports the single
models, the 5-model ensemble and the ensemble with TTA, at the Youden threshold chosen on the
pooled out-of-fold validation predictions (never on the held-out films). The plain scores are
checked against the job's own prediction file, so this script and the evaluation pass agree.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analysis import _threshold, write_outputs  # noqa: E402

from cxrnet.data.decode import decode  # noqa: E402
from cxrnet.evaluation.curves import auroc  # noqa: E402
from cxrnet.evaluation.report import SplitPredictions, read_predictions  # noqa: E402
from cxrnet.evaluation.thresholds import binary_metrics_at  # noqa: E402
from cxrnet.inference.predict import to_input  # noqa: E402
from cxrnet.inference.scorers import FlipAveraged, load_scorer  # noqa: E402
from cxrnet.passes.fold_ensemble import mean_over_members, pooled_out_of_fold  # noqa: E402
from cxrnet.runs.results import collect_runs  # noqa: E402

BATCH = 128
# The largest difference allowed between this script's plain scores and the evaluation pass's
# (6 decimals in the CSV, plus float noise between batch sizes).
AGREEMENT = 1e-4


def score(checkpoint: Path, files: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(plain, flip-averaged) pneumonia probabilities of ``files``, as cxrnet-predict scores
    them without and with ``tta=true``."""
    plain = load_scorer(checkpoint, device="cpu")
    flipped = FlipAveraged(plain)
    images = np.stack([to_input(decode(file, plain.preprocessing)) for file in files])
    batches = [images[start : start + BATCH] for start in range(0, len(images), BATCH)]
    return (
        np.concatenate([plain(batch) for batch in batches]),
        np.concatenate([flipped(batch) for batch in batches]),
    )


def _at(part: SplitPredictions, threshold: float) -> dict[str, float]:
    at = binary_metrics_at(part.probabilities, part.labels, threshold)
    return {
        "auroc": auroc(part.probabilities, part.labels),
        "sensitivity": at["recall"],
        "specificity": at["specificity"],
        "f1": at["f1"],
    }


def study(variant_dir: Path) -> dict[str, dict[str, float]]:
    per_seed: dict[int, list[tuple[SplitPredictions, SplitPredictions, SplitPredictions]]]
    per_seed = defaultdict(list)
    for run in collect_runs([variant_dir]):
        if not run.completed or run.record is None:
            continue
        seed = int(run.overrides.get("seed", 42))  # type: ignore[arg-type]
        val = read_predictions(run.path / "predictions_val.csv")
        test = read_predictions(run.path / "predictions_test.csv")
        plain, tta = score(Path(run.record.paths["best_checkpoint"]), test.files)
        gap = float(np.max(np.abs(plain - test.probabilities)))
        if gap > AGREEMENT:
            raise SystemExit(f"{run.path}: plain scores differ from predictions_test.csv by {gap}")
        per_seed[seed].append((val, test, replace(test, probabilities=tta)))
    results = {}
    for seed, jobs in sorted(per_seed.items()):
        threshold = _threshold(pooled_out_of_fold([val for val, _, _ in jobs]), "youden")
        names = [f"model {i}" for i in range(len(jobs))]
        singles = [_at(test, threshold) for _, test, _ in jobs]
        singles_tta = [_at(tta, threshold) for *_, tta in jobs]
        ensemble = mean_over_members([test for _, test, _ in jobs], names)
        ensemble_tta = mean_over_members([tta for *_, tta in jobs], names)
        results[f"seed {seed}"] = {
            "models": len(jobs),
            "threshold": threshold,
            **{f"single_{k}": float(np.mean([s[k] for s in singles])) for k in singles[0]},
            **{f"single_tta_{k}": float(np.mean([s[k] for s in singles_tta])) for k in singles[0]},
            **{f"ensemble_{k}": v for k, v in _at(ensemble, threshold).items()},
            **{f"ensemble_tta_{k}": v for k, v in _at(ensemble_tta, threshold).items()},
        }
    return results


def render(results: dict[str, dict[str, float]]) -> str:
    kinds = [("single", "single model (mean of 5)"), ("single_tta", "single model + flip TTA")]
    kinds += [("ensemble", "5-fold ensemble"), ("ensemble_tta", "5-fold ensemble + flip TTA")]
    lines = ["| seed | predictor | AUROC | sens | spec | F1 |", "|---|---|--:|--:|--:|--:|"]
    for seed, row in results.items():
        for key, name in kinds:
            lines.append(
                f"| {seed} | {name} | {row[f'{key}_auroc']:.4f} | {row[f'{key}_sensitivity']:.3f}"
                f" | {row[f'{key}_specificity']:.3f} | {row[f'{key}_f1']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = study(args.variant_dir)
    if not results:
        raise SystemExit(f"no completed jobs under {args.variant_dir}")
    write_outputs(args.out, "tta", render(results), results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
