"""Stopping and resuming through the console script: SIGTERM, SIGKILL, exact resume, one folder."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from helpers.console import QUICK, run_folder, run_train, start_train

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]  # tests/, for helpers on PYTHONPATH


def _wait_for(pattern: str, folder: Path, process: subprocess.Popen[str], timeout: float = 240):
    """The first file matching ``pattern`` under ``folder``, while ``process`` still runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(folder.glob(pattern))
        if found:
            return found[0]
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            raise AssertionError(f"training ended before {pattern} appeared:\n{output[-3000:]}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no {pattern} under {folder} after {timeout} s")


def _record(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def _val_metrics(record: dict) -> dict[str, float]:
    return {k: v for k, v in record["metrics"].items() if k.startswith("val/")}


def test_sigterm_checkpoints_records_interrupted_and_the_resume_continues_the_run(
    synthetic_root: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    args = [
        *QUICK,
        f"data.root={synthetic_root}",
        "data.batch_size=8",
        "test=false",
        "logger=[csv,wandb]",
        f"paths.log_dir={logs}",
    ]
    process = start_train([*args, "trainer.max_epochs=500"], tmp_path)
    # After the first validation, so there is a best score to keep.
    best = _wait_for("debug/runs/*/checkpoints/epoch_*.ckpt", logs, process)
    last = best.with_name("last.ckpt")
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)

    assert process.returncode not in (0, None), output[-3000:]
    run_dir = last.parent.parent
    record = _record(run_dir)
    assert record["status"] == "interrupted"
    assert "SIGTERM" in record["error"]
    assert "ckpt_path=" in record["error"]
    checkpoint = torch.load(last, map_location="cpu", weights_only=False)
    stopped_epoch = checkpoint["epoch"]
    best_before = checkpoint["cxrnet_best_val"]

    # ckpt_path inside a run folder continues that folder, its W&B run and its best score.
    done = run_train(
        [*args, f"ckpt_path={last}", f"trainer.max_epochs={stopped_epoch + 2}"], tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert run_folder(done.stdout) == run_dir
    assert [p.name for p in (logs / "debug" / "runs").iterdir()] == [run_dir.name]
    resumed = _record(run_dir)
    assert resumed["status"] == "completed"
    assert resumed["paths"]["resumed_from"] == str(last)
    assert resumed["metrics"]["val/auroc_best"] >= best_before
    run_ids = {p.name.rsplit("-", 1)[-1] for p in (run_dir / "wandb").glob("offline-run-*")}
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 2
    assert len(run_ids) == 1, f"the resume started another W&B run: {run_ids}"


def test_ckpt_path_last_without_a_checkpoint_names_the_folder_and_the_fix(
    synthetic_root: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_run"
    done = run_train(
        [*QUICK, f"data.root={synthetic_root}", "ckpt_path=last", f"hydra.run.dir={empty}"],
        tmp_path,
    )
    assert done.returncode == 2  # a usage error: one line, no traceback
    assert f"no checkpoint in {empty}" in done.stderr
    assert "Traceback" not in done.stderr
    assert "point hydra.run.dir at the run folder" in done.stderr
    assert _record(empty)["status"] == "failed"


# 64 training films in batches of 8: 8 steps an epoch. last.ckpt every 3 steps (3, 6, 9, 12, ...)
# and at each epoch's end; a run killed at step 13, in epoch 1, one step after the mid-epoch
# last.ckpt of step 12, repeats nothing and skips nothing only if the resume restores the rest of
# that epoch exactly. Checkpointing draws no random number, so the uninterrupted reference runs
# with the same settings.
STEPS_PER_EPOCH = 8
KILL_AT_STEP = 13
SAVED_AT_STEP = 12


def _deterministic_args(
    synthetic_root: Path, logs: Path, variant: tuple[str, ...] = ()
) -> list[str]:
    return [
        *QUICK,
        f"data.root={synthetic_root}",
        "data.batch_size=8",
        "data.augment.strength=1.0",
        "trainer.deterministic=true",
        "trainer.max_epochs=4",
        "callbacks.last_checkpoint.every_n_train_steps=3",
        "seed=5",
        "test=false",
        f"paths.log_dir={logs}",
        *variant,
    ]


# The seed recipe (class weights, ReduceLROnPlateau); the weighted sampler with a one-cycle
# schedule, which asks the trainer for the run's length before the loops are restored; and the
# augmentation of whole batches in the batch-transfer hooks (cxrnet/data/batch_augment.py).
VARIANTS = {
    "recipe": (),
    "sampler_onecycle": ("data.imbalance=sampler", "model/scheduler=onecycle"),
    "augment_on_device": ("data.augment.on_device=true", "data.augment.hflip=true"),
}


@pytest.fixture(scope="module")
def uninterrupted(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The run folder of an uninterrupted run per variant, made once for this module."""
    folders: dict[str, Path] = {}

    def run(variant: str) -> Path:
        if variant not in folders:
            tmp_path = tmp_path_factory.mktemp(f"uninterrupted_{variant}")
            args = _deterministic_args(synthetic_root, tmp_path, VARIANTS[variant])
            done = run_train(args, tmp_path)
            assert done.returncode == 0, done.stderr[-3000:]
            folders[variant] = run_folder(done.stdout)
        return folders[variant]

    return run


def _logged(run_dir: Path) -> dict[tuple[str, str, str], str]:
    """Every value the CSV logger wrote, by (epoch, step, metric)."""
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return {
            (row["epoch"], row["step"], key): value
            for row in csv.DictReader(handle)
            for key, value in row.items()
            if key not in ("epoch", "step") and value != ""
        }


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    last = run_dir / "checkpoints" / "last.ckpt"
    return torch.load(last, map_location="cpu", weights_only=True)["state_dict"]


def test_two_runs_from_one_seed_give_identical_metrics(
    synthetic_root: Path, tmp_path: Path, uninterrupted
) -> None:
    expected = _record(uninterrupted("recipe"))
    assert _val_metrics(expected)

    again = run_train(_deterministic_args(synthetic_root, tmp_path), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    run_dir = run_folder(again.stdout)
    assert _val_metrics(_record(run_dir)) == _val_metrics(expected)
    assert _logged(run_dir) == _logged(uninterrupted("recipe"))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_run_killed_mid_epoch_resumes_exactly(
    synthetic_root: Path, tmp_path: Path, uninterrupted, variant: str
) -> None:
    reference_dir = uninterrupted(variant)
    expected = _record(reference_dir)

    args = _deterministic_args(synthetic_root, tmp_path, VARIANTS[variant])
    killer = [
        "+callbacks.sigkill._target_=helpers.sigkill.SigkillAtStep",
        f"+callbacks.sigkill.step={KILL_AT_STEP}",
    ]
    killed = run_train([*args, *killer], tmp_path, env={"PYTHONPATH": str(TESTS)})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    (run_dir,) = (tmp_path / "debug" / "runs").iterdir()
    assert _record(run_dir)["status"] == "running"  # killed before it could say anything
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] == SAVED_AT_STEP
    assert saved["global_step"] % STEPS_PER_EPOCH, "the test needs a mid-epoch checkpoint"
    assert not list(last.parent.glob(".last.ckpt.partial-*"))

    done = run_train([*args, "ckpt_path=last", f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "dataloader is not resumable" not in done.stderr
    record = _record(run_dir)
    assert record["status"] == "completed"
    assert record["paths"]["resumed_from"] == str(last)
    # The best checkpoint's validation metrics (val/auroc_best, the threshold chosen on
    # validation, its confidence intervals) are those of the uninterrupted run ...
    assert _val_metrics(record) == _val_metrics(expected)
    best, expected_best = Path(record["paths"]["best_checkpoint"]), expected["paths"]
    assert best.name == Path(expected_best["best_checkpoint"]).name
    # ... so is everything logged after the resume (the CSV logger starts its file again), the
    # interrupted epoch's training metrics included ...
    logged, reference_logged = _logged(run_dir), _logged(reference_dir)
    assert {key[2] for key in logged} >= {"train/loss", "val/loss", "val/auroc"}
    assert {key: reference_logged.get(key) for key in logged} == logged
    # ... and every weight at the end.
    final, reference_final = _final_weights(run_dir), _final_weights(reference_dir)
    assert final.keys() == reference_final.keys()
    assert all(torch.equal(final[key], reference_final[key]) for key in final)


def test_a_run_killed_after_an_epoch_resumes_exactly(
    synthetic_root: Path, tmp_path: Path, uninterrupted
) -> None:
    expected = _val_metrics(_record(uninterrupted("recipe")))

    # SIGKILL leaves no chance to save anything: the resume starts from the last checkpoint
    # written at an epoch's end and must still end exactly where the uninterrupted run did.
    args = [*_deterministic_args(synthetic_root, tmp_path), "~callbacks.last_checkpoint"]
    process = start_train(args, tmp_path)
    # Killed as soon as epoch 0 has been validated and checkpointed, while epoch 1 trains.
    last = _wait_for("debug/runs/*/checkpoints/last.ckpt", tmp_path, process)
    process.kill()
    process.communicate(timeout=60)
    run_dir = last.parent.parent
    assert process.returncode == -signal.SIGKILL
    assert _record(run_dir)["status"] == "running"  # killed before it could say anything
    saved = torch.load(last, map_location="cpu", weights_only=True)
    assert saved["global_step"] % STEPS_PER_EPOCH == 0, "an end-of-epoch checkpoint"
    assert saved["epoch"] < 3, "the run finished before it was killed"

    done = run_train([*args, "ckpt_path=last", f"hydra.run.dir={run_dir}"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = _record(run_dir)
    assert record["status"] == "completed"
    assert record["paths"]["resumed_from"].endswith("last.ckpt")
    assert _val_metrics(record) == expected
