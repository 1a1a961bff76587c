"""``cxrnet-train`` on two synthetic sources, ``public`` and ``site``: the run every console
test of named sources starts from, with the test's own settings on top."""

from __future__ import annotations

import csv
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cxrnet.data.synthetic import SyntheticSpec, generate_synthetic
from helpers.console import QUICK, run_folder, run_train


def train_on_two_sources(
    tmp_path: Path, settings: Sequence[str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Path], list[dict[str, str]]]:
    """(the finished run, each source's folder, the run's split.csv rows); the run's exit code
    is checked here, with its output's tail as the message."""
    spec = SyntheticSpec(n_train=32, n_val=8, n_test=8, min_size=40, max_size=56, seed=5)
    roots = {
        "public": generate_synthetic(tmp_path / "public", spec),
        "site": generate_synthetic(tmp_path / "site", SyntheticSpec(**{**vars(spec), "seed": 6})),
    }
    done = run_train(
        [
            *QUICK,
            f"data.sources={{public: {roots['public']}, site: {roots['site']}}}",
            *settings,
            "data.image_size=32",
            "data.batch_size=8",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (run_folder(done.stdout) / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return done, roots, rows
