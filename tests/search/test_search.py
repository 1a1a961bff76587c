"""cxrnet-search: the space file, tiny trials on synthetic data, failures, pruning, resume."""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

optuna = pytest.importorskip("optuna")

from cxrnet.hardware import resolve_precision  # noqa: E402
from cxrnet.runs import RunRecord, RunStatus  # noqa: E402
from cxrnet.runs import format_override_value as format_value  # noqa: E402
from cxrnet.runs import record as runs  # noqa: E402
from cxrnet.runs.results import collect_runs  # noqa: E402
from cxrnet.search import runner as search_module  # noqa: E402
from cxrnet.search.runner import search  # noqa: E402
from cxrnet.search.space import SearchSettings, parse_space, round_float  # noqa: E402

SPACES = sorted(
    Path(str(p)).stem
    for p in importlib.resources.files("cxrnet.conf").joinpath("hparams_search").iterdir()
    if p.name.endswith(".yaml")
)

# Seconds per trial: a small network, two epochs of three batches of 32x32 images.
TINY = [
    "debug=fast",
    "trainer.max_epochs=2",
    "model.net.widths=[8,8,16,16]",
    "model.net.hidden=16",
    "hparams_search.enqueue=[]",
]
# lr 1e8 makes the loss NaN within a few steps: a real divergence, not a mock.
DIVERGING = "hparams_search.enqueue=[{model:{optimizer:{lr:1.0e8}}}]"


def _study(tmp_path: Path) -> optuna.Study:
    url = f"sqlite:///{tmp_path / 'study' / 'study.db'}"
    return optuna.load_study(study_name="notebook_recipe", storage=url)


@pytest.fixture
def run_search(compose_cfg, synthetic_root: Path, tmp_path: Path):
    """``run_search(*overrides)``: search() as cxrnet-search calls it, in tmp_path/study."""

    def _run(*extra: str, edit: dict[str, Any] | None = None) -> dict[str, Any]:
        overrides = [*TINY, f"data.root={synthetic_root}", *extra]
        cfg = compose_cfg("search", overrides)
        if edit:
            with open_dict(cfg):
                for key, value in edit.items():
                    OmegaConf.update(cfg, key, value, merge=False)
        return search(
            cfg, tmp_path / "study", overrides, lambda ov: compose_cfg("search", list(ov))
        )

    return _run


# --------------------------------------------------------------------------- the space


@pytest.mark.parametrize("name", SPACES)
def test_every_shipped_search_composes_and_parses(compose_cfg, name: str) -> None:
    cfg = compose_cfg("search", [f"hparams_search={name}"])
    assert cfg.test is False and cfg.monitor.startswith("val/")
    settings = SearchSettings.from_config(cfg.hparams_search)
    train_cfg = compose_cfg("train")
    for spec in settings.space:
        assert OmegaConf.select(train_cfg, spec.key) is not None, spec.key


def test_the_notebook_recipe_search_covers_the_recipe_knobs(compose_cfg) -> None:
    settings = SearchSettings.from_config(compose_cfg("search").hparams_search)
    specs = {spec.key: spec for spec in settings.space}
    assert set(specs) == {
        "model.optimizer.lr",
        "model.net.dropout",
        "data.batch_size",
        "data.imbalance",
        "data.augment.strength",
    }
    assert specs["model.optimizer.lr"].kind == "float" and specs["model.optimizer.lr"].log
    assert specs["data.imbalance"].choices == ("class_weight", "sampler", "none")
    # The seed recipe is queued first, so a study says whether it was beaten.
    assert settings.enqueue[0]["model.optimizer.lr"] == 1.0e-3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "uniform", "low": 0, "high": 1}, "type must be one of"),
        ({"type": "float", "low": 1, "high": 0}, "low must be <= high"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "log scale needs low > 0"),
        ({"type": "float", "low": 0, "hihg": 1}, "unknown field"),
        ({"type": "int", "low": 1, "high": 8.5}, "whole numbers"),
        ({"type": "categorical", "choices": []}, "non-empty list"),
        ({"type": "categorical", "choices": [[8, 16]]}, "must be scalars"),
    ],
)
def test_a_bad_space_entry_is_rejected_with_its_key(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_space({"model": {"net": {"dropout": spec}}})
    assert "hparams_search.space.model.net.dropout" in str(error.value)


def test_enqueued_keys_must_be_searched() -> None:
    node = {
        "study_name": "s",
        "n_trials": 2,
        "space": {"model": {"net": {"dropout": {"type": "float", "low": 0, "high": 0.5}}}},
        "enqueue": [{"model": {"optimizer": {"lr": 0.1}}}],
    }
    with pytest.raises(ValueError, match=r"\['model.optimizer.lr'\]"):
        SearchSettings.from_config(node)


@pytest.mark.parametrize(
    "value", [3.1622776601683794e-05, 0.3, 64, True, None, "class_weight", "with space", "true"]
)
def test_override_values_read_back_unchanged_by_hydra(value: Any) -> None:
    (override,) = OverridesParser.create().parse_overrides([f"k={format_value(value)}"])
    assert override.value() == value


def test_sampled_floats_are_rounded_to_four_significant_digits() -> None:
    assert round_float(0.0031467304061660057) == 0.003147
    assert round_float(32) == 32 and round_float("sampler") == "sampler"


# --------------------------------------------------------------------------- running studies


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_a_search_runs_trials_and_a_diverging_one_fails_without_stopping_it(
    run_search, tmp_path: Path
) -> None:
    summary = run_search("hparams_search.n_trials=3", DIVERGING)

    study = _study(tmp_path)
    states = [trial.state for trial in study.trials]
    assert states == [optuna.trial.TrialState.FAIL] + [optuna.trial.TrialState.COMPLETE] * 2
    assert "TrainingDiverged" in study.trials[0].user_attrs["error"]
    assert summary["states"] == {"complete": 2, "fail": 1}
    assert summary["best"]["number"] in (1, 2)
    assert json.loads((tmp_path / "study" / "study.json").read_text()) == summary

    trials_dir = tmp_path / "study" / "trials"
    failed = json.loads((trials_dir / "0" / "metrics.json").read_text())
    assert failed["status"] == "failed" and "training diverged" in failed["error"]
    for trial in study.trials[1:]:
        run_dir = trials_dir / str(trial.number)
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert metrics["status"] == "completed"
        # The objective is the validation metric of the run, and trials never test.
        assert trial.value == pytest.approx(metrics["metrics"]["val/auroc"])
        assert not any(key.startswith("test/") for key in metrics["metrics"])
        # The record carries the overrides that reproduce the trial; no hand-made .hydra/.
        overrides = metrics["overrides"]
        assert not (run_dir / ".hydra").exists()
        assert "debug=fast" in overrides
        assert f"data.imbalance={trial.params['data.imbalance']}" in overrides
        assert len(trial.intermediate_values) == 2  # one report per epoch

    # The study folder reads like a sweep: cxrnet-compare finds all three trials.
    runs = collect_runs([tmp_path / "study"])
    assert sorted(run.status for run in runs) == ["completed", "completed", "failed"]


def test_precision_auto_is_resolved_for_every_trial(run_search, tmp_path: Path, capsys) -> None:
    expected = resolve_precision("auto", "auto")
    summary = run_search("hparams_search.n_trials=1", "trainer.precision=auto")
    assert summary["states"] == {"complete": 1}
    run_dir = tmp_path / "study" / "trials" / "0"
    assert json.loads((run_dir / "metrics.json").read_text())["extra"]["precision"] == expected
    assert OmegaConf.load(run_dir / "config.yaml").trainer.precision == expected
    assert f"trainer.precision=auto: {expected} (" in capsys.readouterr().out


@pytest.mark.slow
def test_running_the_same_search_again_resumes_the_study(run_search, tmp_path: Path) -> None:
    first = run_search("hparams_search.n_trials=2")
    assert first["n_trials"] == 2
    before = [(t.number, t.params, t.value) for t in _study(tmp_path).trials]

    second = run_search("hparams_search.n_trials=3")
    trials = _study(tmp_path).trials
    assert second["n_trials"] == 3
    assert [(t.number, t.params, t.value) for t in trials[:2]] == before
    assert trials[2].state == optuna.trial.TrialState.COMPLETE
    assert sorted(p.name for p in (tmp_path / "study" / "trials").iterdir()) == ["0", "1", "2"]

    # Already at n_trials: nothing runs.
    assert run_search("hparams_search.n_trials=3")["n_trials"] == 3


def test_a_trial_below_the_pruners_bar_is_pruned_after_its_first_epoch(
    run_search, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    write_record = runs.write_record

    def spy(record: RunRecord, path: Path | None = None) -> Path:
        written.append(record.status.value)
        return write_record(record, path)

    monkeypatch.setattr(runs, "write_record", spy)
    # No AUROC reaches 2: the threshold pruner stops every trial at its first report.
    pruner = {"_target_": "optuna.pruners.ThresholdPruner", "lower": 2.0}
    summary = run_search("hparams_search.n_trials=1", edit={"hparams_search.pruner": pruner})

    (trial,) = _study(tmp_path).trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [0]
    assert summary["states"] == {"pruned": 1} and summary["best"] is None
    metrics = json.loads((tmp_path / "study" / "trials" / "0" / "metrics.json").read_text())
    assert metrics["status"] == "pruned"
    assert "pruned after epoch 0" in metrics["error"]
    # Written once when the trial started and once as pruned: never as failed first.
    assert written == ["running", "pruned"]


@pytest.mark.slow
def test_an_interrupted_trial_is_rerun_when_the_search_resumes(
    run_search, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[float] = []

    def fake_run(cfg, callbacks, **_):  # the outcome is what matters here, not training
        calls.append(cfg.model.net.dropout)
        if len(calls) == 1:
            raise SystemExit(1)  # what Lightning raises after Ctrl-C
        metrics = {"val/auroc": 0.5 + cfg.model.net.dropout / 10}
        return RunRecord(RunStatus.COMPLETED, str(cfg.paths.output_dir), metrics=metrics)

    monkeypatch.setattr(search_module, "run_training", fake_run)
    with pytest.raises(KeyboardInterrupt):
        run_search("hparams_search.n_trials=2")
    # Queued again at once, so another worker of the study could take it up.
    interrupted, queued = _study(tmp_path).trials
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert interrupted.user_attrs["error"] == "interrupted"
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.user_attrs["retry_of"] == 0

    summary = run_search("hparams_search.n_trials=2")
    trials = _study(tmp_path).trials
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].params == interrupted.params
    assert calls[1] == calls[0]  # the same configuration, trained again
    # The interrupted trial does not count towards n_trials; its rerun does.
    assert [t.state.name for t in trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert summary["states"] == {"complete": 2, "fail": 1}


def test_searched_keys_set_on_the_command_line_are_refused(run_search) -> None:
    with pytest.raises(ValueError, match="both set on the command line and searched"):
        run_search("data.batch_size=8")


def test_a_searched_key_missing_from_the_config_is_refused(run_search) -> None:
    typo = {"type": "float", "low": 0.1, "high": 0.2}
    with pytest.raises(ValueError, match=r"model\.net\.dropuot"):
        run_search(edit={"hparams_search.space.model.net.dropuot": typo})


@pytest.mark.slow
def test_cxrnet_search_command_writes_a_study_folder_named_by_the_study(tmp_path: Path) -> None:
    env = os.environ | {"CXRNET_CACHE_DIR": str(tmp_path / "cache"), "WANDB_MODE": "offline"}
    command = [
        sys.executable,
        "-m",
        "cxrnet.cli.search",
        *TINY,
        "trainer.max_epochs=1",
        "hparams_search.n_trials=2",
        "hparams_search.study_name=smoke",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    study_dir = tmp_path / "logs" / "search" / "smoke"
    summary = json.loads((study_dir / "study.json").read_text())
    assert summary["n_trials"] == 2 and summary["best"] is not None
    assert f"best: trial {summary['best']['number']}" in done.stdout
    assert math.isfinite(summary["best"]["value"])
    # The session's Hydra record is hidden, so the study folder itself is not taken for a job.
    assert not (study_dir / ".hydra").exists()
    assert len(list((study_dir / ".hydra_search").iterdir())) == 1
    assert sorted(run.path.name for run in collect_runs([study_dir])) == ["0", "1"]
