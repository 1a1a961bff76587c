"""A data module that notes each walk of the data and the records it trained on, per DDP rank,
for tests/training/test_ddp_records.py.

Used from the command line (the tests folder on ``PYTHONPATH``):

    data._target_=helpers.records_probe.ProbedDataModule +data.probe_dir=<folder>

Each rank appends a line to ``<folder>/walks_rank<r>.txt`` whenever it finds the films itself,
and writes ``<folder>/records_rank<r>.json``: its records per split as it set them up.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_only

from cxrnet.data.datamodule import ChestXRayDataModule
from cxrnet.data.files import Facts
from cxrnet.data.film_listing import Listing
from cxrnet.plain_data import plain_data


class ProbedDataModule(ChestXRayDataModule):
    def __init__(self, *args: Any, probe_dir: str, **kwargs: Any) -> None:
        # Plain data before the base class saves them as hyperparameters: checkpoints hold
        # no Hydra objects (cxrnet.models.checkpoint).
        kwargs = plain_data(kwargs)
        super().__init__(*args, **kwargs)
        self.probe_dir = Path(probe_dir)
        self.probe_dir.mkdir(parents=True, exist_ok=True)

    def _probe(self, name: str) -> Path:
        return self.probe_dir / f"{name}_rank{rank_zero_only.rank}"

    def _find_records(self, facts: Facts | None) -> Listing:
        with self._probe("walks").with_suffix(".txt").open("a") as handle:
            handle.write("walked\n")
        return super()._find_records(facts)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        records = {
            split: [[str(r.path), r.label, r.subtype, r.patient, r.source_split] for r in rs]
            for split, rs in self.split_records.items()
        }
        self._probe("records").with_suffix(".json").write_text(json.dumps(records))
