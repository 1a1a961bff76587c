"""Two cxrnet-search workers as a Slurm job array sharing one study in a journal file.

The cluster is the single localhost node of tests/helpers/slurm_cluster.py (2 CPUs: both array tasks
run at once); the test skips, saying why, where Slurm cannot run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.console import console_script, script_env

optuna = pytest.importorskip("optuna")

from cxrnet.search.storage import JOURNAL_FILE  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

N_TRIALS = 4
WORKERS = 2


def test_two_search_workers_in_a_job_array_share_one_study(
    slurm_cluster, synthetic_root: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    search = [
        *console_script("cxrnet-search"),
        "debug=fast",
        "trainer.max_epochs=1",
        "model.net.widths=[8,8,16,16]",
        "model.net.hidden=16",
        "hparams_search.enqueue=[]",
        f"data.root={synthetic_root}",
        "hparams_search.storage=journal",
        "hparams_search.study_name=shared",
        f"hparams_search.n_trials={N_TRIALS}",
        f"paths.log_dir={logs}",
    ]
    script = tmp_path / "search.sh"
    script.write_text(
        "\n".join(
            [
                "#!/bin/bash",
                f"#SBATCH --array=0-{WORKERS - 1}",
                "#SBATCH --ntasks=1 --cpus-per-task=1",
                f"#SBATCH --output={tmp_path}/slurm-%A_%a.out",
                " ".join(search),
            ]
        )
        + "\n"
    )
    slurm_cluster.env = script_env(tmp_path) | {"SLURM_CONF": slurm_cluster.env["SLURM_CONF"]}
    job = slurm_cluster.sbatch(script, f"--chdir={tmp_path}")
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT")
    infos = [slurm_cluster.wait(f"{job}_{task}", ended) for task in range(WORKERS)]
    output = "\n".join(p.read_text()[-3000:] for p in sorted(tmp_path.glob("slurm-*.out")))
    assert [info["JobState"] for info in infos] == ["COMPLETED"] * WORKERS, output

    study_dir = logs / "search" / "shared"
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / JOURNAL_FILE))
    )
    study = optuna.load_study(study_name="shared", storage=storage)
    assert study.user_attrs["cxrnet_workers"] == WORKERS
    trials = study.trials
    # Workers finishing a trial at the same moment may each start one more (StopAtNTrials).
    assert N_TRIALS <= len(trials) <= N_TRIALS + WORKERS - 1, [t.number for t in trials]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) == len(trials)
    workers = {t.user_attrs["worker"] for t in trials}
    assert workers == {f"slurm-{job}_{task}" for task in range(WORKERS)}  # both took trials

    summary = json.loads((study_dir / "study.json").read_text())
    assert [row["number"] for row in summary["trials"]] == [t.number for t in trials]
    assert summary["states"] == {"complete": len(trials)}
    for trial in trials:
        record = json.loads((study_dir / "trials" / str(trial.number) / "metrics.json").read_text())
        assert record["status"] == "completed"
        assert record["extra"]["trial"] == trial.number
        assert record["metrics"]["val/auroc"] == pytest.approx(trial.value)
        # The run record names the array task's own job id.
        assert record["extra"]["slurm_job_id"] in {info["JobId"] for info in infos}
