"""A search worker that exits while a trial of its study is still running (a worker killed
before its grace time) says so, and when that trial will run again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers.console import run_script
from helpers.journal import new_journal_study

optuna = pytest.importorskip("optuna")

STUDY = "left"


@pytest.mark.slow
def test_a_worker_leaving_a_running_trial_names_it_and_when_it_runs_again(
    tmp_path: Path,
) -> None:
    # A study whose trial 0 was taken by a worker that was then killed: RUNNING, with a
    # heartbeat a few seconds old, well inside the grace period.
    _, storage, study = new_journal_study(tmp_path / "logs", STUDY)
    dead = study.ask()
    storage.set_trial_system_attr(dead._trial_id, "cxrnet_heartbeat", time.time())

    done = run_script(
        "cxrnet-search",
        [
            "debug=fast",
            "hparams_search.enqueue=[]",
            "hparams_search.storage=journal",
            f"hparams_search.study_name={STUDY}",
            "hparams_search.n_trials=1",  # counted already: this worker trains nothing
            "hparams_search.heartbeat_s=60",
            "hparams_search.grace_s=600",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"this worker leaves trial(s) [0] of study {STUDY} running" in output
    assert "hparams_search.grace_s (600 s)" in output
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]
