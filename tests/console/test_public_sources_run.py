"""NIH, CheXpert and a site's own films in one cxrnet-train run, as the public-datasets issue's
users run them: CheXpert trains only (data.source_roles), the draw is balanced over the
sources, the checkpoint is chosen on the site's val films and the threshold too; the report
reads every number per source, with the source checked as a shortcut."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from helpers.console import run_train
from helpers.public_data import chexpert_download, nih_download


@pytest.mark.slow  # one training run on three sources
def test_nih_chexpert_and_a_site_train_together_and_report_per_source(
    synthetic_root: Path, tmp_path: Path
) -> None:
    nih_download(tmp_path / "nih", patients=150)  # with NIH's own (patient) test split
    chexpert_download(tmp_path / "chexpert", 600)
    sources = (
        f"data.sources={{nih: {{format: nih, root: {tmp_path / 'nih'}}}, "
        f"chexpert: {{format: chexpert, root: {tmp_path / 'chexpert'}}}, site: {synthetic_root}}}"
    )
    run = tmp_path / "run"
    done = run_train(
        [
            "debug=fast",
            sources,
            "data.split=patient",
            "data.source_roles={chexpert: train}",
            "monitor=val/auroc/site",
            "data.source_balance=equal",
            "threshold.source=site",
            f"hydra.run.dir={run}",
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    with (run / "split.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_source: dict[str, set[str]] = {}
    for row in rows:
        by_source.setdefault(row["source"], set()).add(row["split"])
    # CheXpert only trains; NIH and the site are split into train, val and test.
    every = {"train", "val", "test"}
    assert by_source == {"nih": every, "chexpert": {"train"}, "site": every}
    report = (run / "report.md").read_text()
    # The title names each source with what it is and its films (the site's are generated).
    title = report.splitlines()[0]
    assert title.startswith("# Model card: pneumonia vs normal on chexpert (CheXpert, ")
    assert " and nih (NIH ChestX-ray14, " in title and " and site (SYNTHETIC, " in title
    assert "Films per source and class" in report
    assert "- nih: NIH ChestX-ray14: PNEUMONIA = 'Pneumonia' present" in report
    assert "- chexpert: CheXpert: PNEUMONIA = 'Pneumonia' present" in report
    assert "data.split=patient" in report and "site" in report
    # NIH's and CheXpert's OTHER_ABNORMAL films and CheXpert's laterals, counted per reason.
    with (run / "ignored.csv").open(newline="") as handle:
        reasons = [row["reason"].split(" (")[0] for row in csv.DictReader(handle)]
    left_out = report.split("Files left out, every one listed in ignored.csv:")[1]
    for reason in set(reasons):
        assert f"{reasons.count(reason):,}: {reason}" in left_out
    metrics = json.loads((run / "metrics.json").read_text())
    flat = metrics.get("metrics", metrics)
    for split in ("val", "test"):
        for source in ("nih", "site"):
            assert f"{split}/subgroup/source={source}/auroc" in flat
        assert f"{split}/shortcut/source/auroc" in flat
    assert "| source |" in report.split("## Subgroups")[-1]
