"""Integration on the real Kermany images in ../shared (skipped in a user's clone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrnet.training.run import run

pytestmark = pytest.mark.real_data


def _slice(real_224: Path, out: Path, per_class: int) -> Path:
    """Links to the first files of each class: a small real dataset that trains in seconds."""
    for split, count in (("train", per_class), ("val", None)):
        for cls in ("NORMAL", "PNEUMONIA"):
            target = out / split / cls
            target.mkdir(parents=True)
            for path in sorted((real_224 / split / cls).iterdir())[:count]:
                (target / path.name).symlink_to(path)
    return out


def test_seed_recipe_trains_an_epoch_on_real_images(compose_cfg, real_224: Path, tmp_path):
    root = _slice(real_224, tmp_path / "real", per_class=48)
    cfg = compose_cfg(
        "train",
        [
            "experiment=notebook_baseline",
            f"data.root={root}",
            "trainer.max_epochs=1",
            "data.num_workers=0",
            "data.decode_workers=0",
        ],
    )
    result = run(cfg)
    run_dir = Path(result.run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert 0.0 <= metrics["metrics"]["val/auroc"] <= 1.0
    assert not any(key.startswith("test/") for key in metrics["metrics"])  # no test split here
    assert Path(metrics["paths"]["best_checkpoint"]).is_file()
    assert (run_dir / "config.yaml").is_file()
    counts = (run_dir / "counts.csv").read_text().splitlines()
    assert counts[1].startswith("train,96,")
    assert counts[2].startswith("val,16,")
