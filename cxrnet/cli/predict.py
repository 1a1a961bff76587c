"""``cxrnet-predict ckpt_path=<.ckpt | ensemble.json | .onnx> input=<folder | image | list.txt |
manifest.csv>``: score unlabelled films at the model's stored threshold; unreadable files get an
error row."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from cxrnet.cli.exit_codes import brief_errors
from cxrnet.cli.hydra_support import (
    CONFIG_PATH,
    HYDRA_VERSION,
    allowed_network,
    check_types,
    job_overrides,
    run_hydra,
)
from cxrnet.config import register_resolvers, save_resolved_config
from cxrnet.runs import RunRecorder

if TYPE_CHECKING:
    from cxrnet.inference.predict import PredictionSummary

log = logging.getLogger(__name__)

# Some files could not be scored (their rows say why); the others were written.
EXIT_SOME_FAILED = 3


def predict(cfg: DictConfig) -> tuple[PredictionSummary, Path]:
    # Here, not at the top: `cxrnet-predict --help` and usage errors need no torch.
    from cxrnet.evaluation.probabilities import DEFAULT_THRESHOLD
    from cxrnet.inference.inputs import input_columns, read_inputs
    from cxrnet.inference.predict import check_output, check_settings, predict_files
    from cxrnet.inference.scorers import load_scorer
    from cxrnet.passes.seen_pass import seen_films_at

    # Every check that can refuse the command runs before the model or a film is opened.
    check_settings(cfg.batch_size, cfg.num_workers)
    ckpt_path = Path(to_absolute_path(str(cfg.ckpt_path)))
    source = Path(to_absolute_path(str(cfg.input)))
    output = Path(to_absolute_path(str(cfg.output)))
    check_output(output, [ckpt_path, source])
    paths, columns = read_inputs(source)
    check_output(output, paths)
    columns = input_columns(paths, columns)
    scorer = load_scorer(ckpt_path, cfg.device, tta=cfg.tta, network=allowed_network(cfg))
    point = scorer.operating_point
    log.info(
        "%d films, %s backend, threshold %s",
        len(paths),
        scorer.backend,
        f"{DEFAULT_THRESHOLD:g} (none stored)" if point is None else point.describe(),
    )
    if point is None:
        print(
            f"note: {ckpt_path.name} stores no decision threshold (last.ckpt is saved before one "
            f"is chosen), so films are called at {DEFAULT_THRESHOLD:g} (the threshold column); "
            "use the best checkpoint, or choose one with cxrnet-eval threshold.rechoose=true",
            file=sys.stderr,
        )
    explain_dir = output.with_name(f"{output.stem}_heatmaps") if cfg.explain else None
    summary = predict_files(
        paths,
        scorer,
        output,
        cfg.batch_size,
        cfg.num_workers,
        progress=cfg.progress,
        explain_dir=explain_dir,
        columns=columns,
        seen=seen_films_at(ckpt_path),
    )
    if explain_dir is not None:
        print(f"heatmaps: {explain_dir}")
    return summary, output


@hydra.main(version_base=HYDRA_VERSION, config_path=CONFIG_PATH, config_name="predict")
@brief_errors
def _hydra_main(cfg: DictConfig) -> None:
    output_dir = Path(cfg.paths.output_dir)
    save_resolved_config(cfg, output_dir)
    with RunRecorder(output_dir, "cxrnet-predict", job_overrides()) as recorder:
        check_types(cfg)  # a value of the wrong kind: a failed record naming it, nothing read
        summary, output = predict(cfg)
        scored = len(summary.rows) - summary.failed
        recorder.complete(
            {
                "predict/films": float(len(summary.rows)),
                "predict/failed": float(summary.failed),
                "predict/images_per_second": summary.images_per_second,
            },
            paths={"predictions": str(output), "ckpt_path": str(cfg.ckpt_path)},
        )
    print(f"predictions: {output}")
    print(
        f"{scored} of {len(summary.rows)} films scored in {summary.seconds:.1f} s "
        f"({summary.images_per_second:.1f} images/s, threshold {summary.threshold:.4f})"
    )
    if summary.failed:
        print(
            f"{summary.failed} files could not be read; their rows in {output} say why",
            file=sys.stderr,
        )
        sys.exit(EXIT_SOME_FAILED)


def main() -> None:
    register_resolvers()
    run_hydra(_hydra_main)


if __name__ == "__main__":
    main()
