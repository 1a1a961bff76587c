"""A search journal with a torn last record (a worker killed mid-write) is repaired before a
worker appends to it; one corrupt elsewhere is a one-line error naming the file and the line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers.console import run_script
from helpers.journal import new_journal_study

optuna = pytest.importorskip("optuna")

STUDY = "torn"
# As in test_search_workers.py: seconds per trial on synthetic 32 px films.
WORKER = [
    "debug=fast",
    "model.net.widths=[8,8,16,16]",
    "model.net.hidden=16",
    "hparams_search.enqueue=[]",
    "hparams_search.storage=journal",
    f"hparams_search.study_name={STUDY}",
    "hparams_search.n_trials=1",
]
# The start of a record as Optuna writes one, cut before its end and its newline.
TORN = b'{"op_code":5,"worker_id":"3c1f-dead","trial_id":0,"param_na'


def _journal_study(tmp_path: Path) -> Path:
    """A study as a first worker leaves it (created, joined), in the folder cxrnet-search uses."""
    journal, _, study = new_journal_study(tmp_path / "logs", STUDY)
    study.set_user_attr("note", "kept")
    return journal


def _search(tmp_path: Path):
    return run_script(
        "cxrnet-search", [*WORKER, f"paths.log_dir={tmp_path / 'logs'}"], tmp_path, timeout=600
    )


@pytest.mark.slow  # a whole search through the console
def test_a_torn_last_record_is_cut_off_with_a_warning_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    journal = _journal_study(tmp_path)
    whole = journal.read_bytes()
    with journal.open("ab") as f:
        f.write(TORN)

    done = _search(tmp_path)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"{journal} ended in a torn record" in output
    assert f"dropped its {len(TORN)} byte(s)" in output
    # Repaired, then appended to: every line a record, the records before the tear kept.
    data = journal.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    for line in data.splitlines():
        json.loads(line)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name=STUDY, storage=storage)
    assert study.user_attrs["note"] == "kept"
    assert study.user_attrs["cxrnet_workers"] == 2
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]

    # The next worker finds nothing to repair and, at n_trials, runs nothing.
    again = _search(tmp_path)
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "torn record" not in again.stdout + again.stderr


@pytest.mark.slow
def test_a_corrupt_record_before_the_last_is_one_error_naming_file_and_line(
    tmp_path: Path,
) -> None:
    journal = _journal_study(tmp_path)
    lines = journal.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    # A torn record that a worker then appended to: the glued line is line 2.
    lines[1] = TORN + lines[1]
    broken = b"".join(lines)
    journal.write_bytes(broken)

    done = _search(tmp_path)
    assert done.returncode == 2, (done.stdout + done.stderr)[-3000:]
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert f"{journal} line 2 is not a journal record" in errors[0]
    assert "sed -i '2d'" in errors[0]
    assert journal.read_bytes() == broken  # nothing appended, nothing cut
