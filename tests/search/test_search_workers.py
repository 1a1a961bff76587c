"""Several cxrnet-search workers on one study: the journal storage, per-worker seeds, and a
worker stopped by SIGTERM or killed outright, whose trial is run again once.

The Slurm version (two workers as a job array on a real local Slurm) is in
tests/search/test_slurm_search.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers.console import console_script, script_env

optuna = pytest.importorskip("optuna")

from cxrnet.runs import RunRecord, RunStatus  # noqa: E402
from cxrnet.search import runner as search_module  # noqa: E402
from cxrnet.search.runner import search  # noqa: E402
from cxrnet.search.signals import SearchInterrupted, stop_on_sigterm  # noqa: E402
from cxrnet.search.space import SearchSettings  # noqa: E402
from cxrnet.search.storage import JOURNAL_FILE, open_storage  # noqa: E402

TrialState = optuna.trial.TrialState

# As in test_search.py: seconds per trial on synthetic 32 px films.
TINY = [
    "debug=fast",
    "model.net.widths=[8,8,16,16]",
    "model.net.hidden=16",
    "hparams_search.enqueue=[]",
]


def journal_study(study_dir: Path, name: str = "notebook_recipe") -> optuna.Study:
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(study_dir / JOURNAL_FILE))
    )
    return optuna.load_study(study_name=name, storage=storage)


def test_an_unknown_storage_is_refused_with_the_choices() -> None:
    node = {
        "study_name": "s",
        "n_trials": 1,
        "storage": "jornal",
        "space": {"model": {"net": {"dropout": {"type": "float", "low": 0, "high": 0.5}}}},
    }
    with pytest.raises(ValueError, match=r"'sqlite'.*'journal'.*postgresql://"):
        SearchSettings.from_config(node)


@pytest.mark.slow
def test_workers_of_one_journal_study_draw_distinct_trials_and_count_together(
    compose_cfg, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two sessions on one journal study, as two workers started one after the other: the
    second continues the numbering, samples with its own seed (the same seed would repeat the
    first worker's random draws) and stops at n_trials counted over both."""

    def fake_run(cfg, callbacks, **_):  # what the study records is under test, not training
        metrics = {"val/auroc": 0.5 + cfg.model.net.dropout / 10}
        return RunRecord(RunStatus.COMPLETED, str(cfg.paths.output_dir), metrics=metrics)

    monkeypatch.setattr(search_module, "run_training", fake_run)
    study_dir = tmp_path / "study"

    def run(n_trials: int) -> dict:
        overrides = [
            *TINY,
            f"data.root={synthetic_root}",
            "hparams_search.storage=journal",
            f"hparams_search.n_trials={n_trials}",
        ]
        cfg = compose_cfg("search", overrides)
        return search(cfg, study_dir, overrides, lambda ov: compose_cfg("search", list(ov)))

    run(3)
    summary = run(6)

    assert (study_dir / JOURNAL_FILE).is_file() and not (study_dir / "study.db").exists()
    study = journal_study(study_dir)
    assert study.user_attrs["cxrnet_workers"] == 2
    trials = study.trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    draws = {tuple(sorted(t.params.items())) for t in trials}
    assert len(draws) == 6, "a worker repeated another's parameters"
    assert summary["storage"] == f"journal://{(study_dir / JOURNAL_FILE).resolve()}"
    assert [row["number"] for row in summary["trials"]] == list(range(6))
    assert all(row["worker"] for row in summary["trials"])
    # Already at n_trials: a third worker joins and runs nothing.
    assert run(6)["n_trials"] == 6


def _start_worker(tmp_path: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            *console_script("cxrnet-search"),
            *TINY,
            "hparams_search.storage=journal",
            "hparams_search.study_name=killed",
            "hparams_search.n_trials=2",
            # Beats every second, dead after three without one: the test need not wait long.
            "hparams_search.heartbeat_s=1",
            "hparams_search.grace_s=3",
            f"paths.log_dir={tmp_path / 'logs'}",
            *extra,
        ],
        cwd=tmp_path,
        env=script_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _signal_once_training(worker: subprocess.Popen[str], trial_dir: Path, signum: int) -> str:
    """Send ``signum`` once the trial has checkpointed an epoch, i.e. in the middle of training."""
    deadline = time.monotonic() + 240
    while not (trial_dir / "checkpoints" / "last.ckpt").exists():
        if worker.poll() is not None or time.monotonic() > deadline:
            worker.kill()
            pytest.fail(f"trial {trial_dir.name} never trained:\n{worker.communicate()[0][-3000:]}")
        time.sleep(0.2)
    worker.send_signal(signum)
    output, _ = worker.communicate(timeout=120)
    return output


@pytest.mark.slow
def test_a_stopped_or_killed_workers_trial_is_run_again_once(tmp_path: Path) -> None:
    study_dir = tmp_path / "logs" / "search" / "killed"
    long_trials = "trainer.max_epochs=50"

    # SIGTERM (Slurm's cancel, pre-emption or time limit): the worker stops its trial, marks it
    # interrupted, queues it again and exits 128 + 15.
    worker = _start_worker(tmp_path, long_trials)
    output = _signal_once_training(worker, study_dir / "trials" / "0", signal.SIGTERM)
    assert worker.returncode == 143, output[-3000:]
    assert "search stopped by SIGTERM" in output
    stopped, queued = journal_study(study_dir, "killed").trials
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["error"] == "interrupted"
    assert queued.state == TrialState.WAITING
    assert queued.user_attrs["retry_of"] == 0
    assert queued.system_attrs["fixed_params"] == stopped.params  # what it will run with
    record = json.loads((study_dir / "trials" / "0" / "metrics.json").read_text())
    assert record["status"] == "interrupted"

    # SIGKILL (no chance to clean up): the next worker takes the queued trial; killed, it stays
    # RUNNING in the study with a heartbeat that stops.
    worker = _start_worker(tmp_path, long_trials)
    _signal_once_training(worker, study_dir / "trials" / "1", signal.SIGKILL)
    assert worker.returncode == -signal.SIGKILL
    assert journal_study(study_dir, "killed").trials[1].state == TrialState.RUNNING

    # A worker started after the grace period fails it and runs it once more, then one more
    # trial: n_trials=2 counts the rerun, not the trials cut short.
    time.sleep(3.5)
    worker = _start_worker(tmp_path, "trainer.max_epochs=1")
    output, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, output[-3000:]
    trials = journal_study(study_dir, "killed").trials
    states = [t.state for t in trials]
    assert states == [TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[2].system_attrs["failed_trial"] == 1
    assert trials[2].params == trials[1].params == trials[0].params
    summary = json.loads((study_dir / "study.json").read_text())
    assert [row["retry_of"] for row in summary["trials"]] == [None, 0, 1, None]
    assert summary["states"] == {"complete": 2, "fail": 2}


def test_a_journal_heartbeat_marks_only_silent_running_trials_stale(tmp_path: Path) -> None:
    settings = SearchSettings.from_config(
        {
            "study_name": "beats",
            "n_trials": 1,
            "storage": "journal",
            "heartbeat_s": 1,
            "grace_s": 60,
            "space": {"x": {"type": "float", "low": 0, "high": 1}},
        }
    )
    storage = open_storage(settings, tmp_path)
    study = optuna.create_study(study_name="beats", storage=storage)
    alive, silent = study.ask(), study.ask()
    storage.record_heartbeat(alive._trial_id)
    storage.set_trial_system_attr(silent._trial_id, "cxrnet_heartbeat", time.time() - 61)
    assert storage._get_stale_trial_ids(study._study_id) == [silent._trial_id]

    optuna.storages.fail_stale_trials(study)
    states = [t.state for t in study.trials]
    # Failed, and queued once more with the same parameters (none were sampled here).
    assert states == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert study.trials[2].system_attrs["failed_trial"] == silent.number


def test_sigterm_stops_a_worker_at_once_outside_training_and_after_lightning_inside() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SearchInterrupted) as stopped, stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises before this ends
    assert stopped.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before  # put back

    # While a trial trains, Lightning's handler is installed and calls the one it found: that
    # one only notes the signal, and Lightning stops the epoch at the end of its batch.
    with stop_on_sigterm() as sigterm:
        lightning_saw: list[int] = []

        def lightning(signum, frame):
            lightning_saw.append(signum)
            sigterm(signum, frame)

        signal.signal(signal.SIGTERM, lightning)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert lightning_saw == [signal.SIGTERM] and sigterm.received
        with pytest.raises(SearchInterrupted):
            sigterm.check()
    assert signal.getsignal(signal.SIGTERM) is before
