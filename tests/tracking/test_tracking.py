"""Experiment tracking: W&B offline for real (read back from its files), TensorBoard, sweeps."""

from __future__ import annotations

import json
import logging
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from helpers.console import QUICK
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from cxrnet.config import register_resolvers
from cxrnet.evaluation.report import SplitPredictions, SplitReport, confidently_wrong_indices
from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.tracking.wandb_logger import (
    CHECKPOINT_KEY,
    finish_wandb_run,
    resolve_wandb_mode,
    run_name_from_overrides,
    wandb_logger,
    wandb_run_defaults,
    wandb_run_id_from_checkpoint,
)
from cxrnet.tracking.wandb_report import WandbReport, curve_rows, thumbnail
from cxrnet.training.run import run

TINY = [
    *QUICK,
    "model.net.widths=[4,4,8,8]",
    "model.net.hidden=8",
    "test=false",
]


def _wandb_env(root: Path) -> dict[str, str]:
    """Offline, no credentials, and W&B's own folders (staged artifacts too) under ``root``."""
    return {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_ERROR_REPORTING": "false",
        "WANDB_DATA_DIR": str(root / "wandb-data"),
        "WANDB_CACHE_DIR": str(root / "wandb-cache"),
        "WANDB_CONFIG_DIR": str(root / "wandb-config"),
        "NETRC": str(root / "no-netrc"),
    }


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in _wandb_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)


# --- reading an offline run back --------------------------------------------------------------


def wandb_records(run_dir: Path) -> Iterator[Any]:
    """The protobuf records of an offline run's ``run-<id>.wandb`` transaction log.

    The file is a LevelDB-style log (a 7-byte W&B header, then 32 KiB blocks of chunks with a
    7-byte header each: checksum, length, type FULL/FIRST/MIDDLE/LAST); wandb 0.31 ships no
    Python reader for it, so this is the few lines it takes.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    block, position, chunks = 32768, 7, []
    while position + 7 <= len(data):
        if block - position % block < 7:  # too little room left for a header: block padding
            position += block - position % block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:  # zero-filled rest of a block
            position += block - position % block
            continue
        chunks.append(data[position + 7 : position + 7 + length])
        position += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(chunks))
            chunks = []
            yield record


def read_offline_run(run_dir: Path) -> dict[str, Any]:
    """What an offline run holds: identity, config, history keys, artifacts, exit code."""
    out: dict[str, Any] = {"config": {}, "history": set(), "artifacts": [], "exit_code": None}
    for record in wandb_records(run_dir):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out |= {
                "id": record.run.run_id,
                "group": record.run.run_group,
                "name": record.run.display_name,
                "job_type": record.run.job_type,
            }
            kind, record = "config", SimpleNamespace(config=record.run.config)
        if kind == "config":
            for item in record.config.update:
                if item.key:
                    out["config"][item.key] = json.loads(item.value_json)
        elif kind == "history":
            out["history"] |= {
                "/".join(item.nested_key) or item.key for item in record.history.item
            }
        elif kind == "artifact":
            out["artifacts"].append(record.artifact)
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out


def offline_runs(folder: Path) -> list[Path]:
    return sorted(folder.glob("wandb/offline-run-*"))


# --- one real offline run, shared by the tests that read it -----------------------------------


def _compose(overrides: list[str], output_dir: Path, cache_dir: Path) -> DictConfig:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_module("cxrnet.conf", version_base="1.3"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.cache_dir = str(cache_dir)
        del cfg.hydra
    GlobalHydra.instance().clear()
    return cfg


@pytest.fixture(scope="module")
def many_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """``logger=many`` with log_model on: CSV, TensorBoard and an offline W&B run."""
    root = tmp_path_factory.mktemp("many")
    with pytest.MonkeyPatch.context() as patch:
        for key, value in _wandb_env(root).items():
            patch.setenv(key, value)
        patch.delenv("WANDB_API_KEY", raising=False)
        cfg = _compose(
            [
                *TINY,
                f"data.root={synthetic_root}",
                "logger=many",
                "logger.wandb.log_model=true",
                "trainer.max_epochs=2",
                "trainer.log_every_n_steps=1",
                # Threshold 0 calls every image pneumonia, so each NORMAL validation image is a
                # confident error the report's table must show.
                "threshold.criterion=fixed",
                "threshold.value=0.0",
            ],
            root / "run",
            root / "cache",
        )
        result = run(cfg)
    return cfg, result, root


def test_wandb_offline_run_holds_config_metrics_report_and_artifacts(many_run) -> None:
    _, result, _ = many_run
    run_dir = Path(result.run_dir)
    (wandb_dir,) = offline_runs(run_dir)
    written = read_offline_run(wandb_dir)

    assert written["exit_code"] == 0
    assert written["job_type"] == "debug"
    assert written["config"]["data"]["image_size"] == 32
    assert written["config"]["threshold"]["value"] == 0.0
    assert "val/threshold" in written["history"], "W&B gets the report's threshold"
    assert "report/val/auroc_ci_low" in written["history"], "and its intervals"
    assert written["config"]["logger"]["wandb"]["mode"] == "auto"
    for key in ("train/loss_step", "train/loss", "val/auroc", "val/auroc_best", "epoch"):
        assert key in written["history"], key

    media = wandb_dir / "files" / "media" / "table" / "val"
    for name in ("confusion_matrix_table", "roc_curve_table", "pr_curve_table"):
        assert list(media.glob(f"{name}_*.table.json")), name
    (wrong_file,) = media.glob("confidently_wrong_*.table.json")
    wrong = json.loads(wrong_file.read_text())
    assert wrong["columns"] == ["image", "file", "label", "prediction", "p_prediction", "p_label"]
    assert wrong["data"], "threshold 0 makes every NORMAL validation image an error"
    assert all(row[2] == "NORMAL" and row[3] == "PNEUMONIA" for row in wrong["data"])
    assert all(Path(row[1]).is_file() for row in wrong["data"])
    confidences = [row[4] for row in wrong["data"]]
    assert confidences == sorted(confidences, reverse=True)

    artifacts = {(a.type, a.name.split("-")[0]): a for a in written["artifacts"]}
    split = artifacts[("split", "split")]
    assert [entry.path for entry in split.manifest.contents] == ["split.csv"]
    models = [a for a in written["artifacts"] if a.type == "model"]
    assert any("best" in a.aliases for a in models), "log_model=true logs the best checkpoint"
    (table,) = [a for a in written["artifacts"] if "confidently_wrong" in a.name]
    thumbnails = [e for e in table.manifest.contents if e.path.startswith("media/images/")]
    assert len(thumbnails) == len(wrong["data"])
    assert all(Path(e.local_path).is_file() for e in thumbnails), "staged for `wandb sync`"

    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_resuming_from_a_checkpoint_continues_the_same_wandb_run(
    many_run, synthetic_root: Path, capsys
) -> None:
    _, first, root = many_run
    (first_dir,) = offline_runs(Path(first.run_dir))
    first_id = read_offline_run(first_dir)["id"]
    last = Path(first.run_dir) / "checkpoints" / "last.ckpt"
    assert wandb_run_id_from_checkpoint(last) == first_id

    cfg = _compose(
        [
            *TINY,
            f"data.root={synthetic_root}",
            "logger=wandb",
            "trainer.max_epochs=3",
            f"ckpt_path={last}",
        ],
        root / "resumed",
        root / "cache",
    )
    result = run(cfg)
    (resumed_dir,) = offline_runs(Path(result.run_dir))
    resumed = read_offline_run(resumed_dir)
    assert resumed["id"] == first_id
    assert resumed["config"]["logger"]["wandb"]["id"] == first_id
    assert resumed["exit_code"] == 0
    out = capsys.readouterr().out
    assert f"W&B offline run: {resumed_dir}" in out
    assert f"wandb sync {resumed_dir}" in out


@pytest.mark.slow
def test_two_multirun_jobs_are_two_runs_in_one_group_even_when_one_fails(
    synthetic_root: Path, tmp_path: Path
) -> None:
    """The first job fails after its W&B run started; the second must still get its own run."""
    sweep = tmp_path / "sweep"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrnet.cli.train",
            "-m",
            # Diverges in training, after its W&B run started (a bad monitor now fails before).
            "model.optimizer.lr=1e8,1e-3",
            "logger=wandb",
            *TINY,
            f"data.root={synthetic_root}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
        env=os.environ | _wandb_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0, "the failed job fails the sweep"
    assert "training diverged" in done.stderr
    first, second = (read_offline_run(d) for job in ("0", "1") for d in offline_runs(sweep / job))
    assert first["id"] != second["id"]
    assert first["group"] == second["group"] == "sweep"
    assert "model.optimizer.lr=100000000.0" in first["name"]
    assert "model.optimizer.lr=0.001" in second["name"]
    assert "logger" not in first["name"] and "data.root" not in first["name"]
    assert (first["exit_code"], second["exit_code"]) == (1, 0)
    assert done.stdout.count("upload it with: wandb sync ") == 2


@pytest.mark.slow
def test_under_ddp_only_rank_zero_makes_a_wandb_run(synthetic_root: Path, tmp_path: Path) -> None:
    """Two CPU processes train; only rank 0 has a W&B run, writes metrics.json and prints."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cxrnet.cli.train",
            "logger=wandb",
            *TINY,
            "+trainer.strategy=ddp",
            "trainer.devices=2",
            f"data.root={synthetic_root}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        cwd=tmp_path,
        env=os.environ | _wandb_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("run folder: ") == 1, "one summary, from rank 0"
    assert done.stdout.count("upload it with: wandb sync ") == 1
    (run_dir,) = (tmp_path / "logs").glob("*/runs/*/wandb/offline-run-*")
    written = read_offline_run(run_dir)
    assert written["exit_code"] == 0 and "val/auroc" in written["history"]
    assert any("confidently_wrong" in a.name for a in written["artifacts"])
    (metrics_file,) = (tmp_path / "logs").glob("*/runs/*/metrics.json")
    metrics = json.loads(metrics_file.read_text())
    assert metrics["status"] == "completed" and "val/threshold" in metrics["metrics"]


def test_csv_and_tensorboard_together_and_the_report_is_inert_without_wandb(
    compose_cfg, synthetic_root: Path
) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = compose_cfg("train", [*TINY, f"data.root={synthetic_root}", "logger=[csv,tensorboard]"])
    assert set(cfg.logger) == {"csv", "tensorboard"}
    assert "wandb_report" not in cfg.callbacks
    report = WandbReport(split_csv=str(Path(cfg.paths.output_dir) / "split.csv"))
    result = run(cfg, extra_callbacks=[report])
    run_dir = Path(result.run_dir)
    assert "val/auroc" in (run_dir / "csv" / "metrics.csv").read_text().splitlines()[0]
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    assert "val/auroc" in events.Tags()["scalars"]
    assert not (run_dir / "wandb").exists()
    checkpoint = load_checkpoint(result.paths["best_checkpoint"])
    assert CHECKPOINT_KEY not in checkpoint


def test_wandb_logger_brings_the_report_callback(compose_cfg) -> None:
    for option in ("wandb", "many", "[csv,wandb]"):
        cfg = compose_cfg("train", [f"logger={option}", "callbacks=early_stopping"])
        assert cfg.callbacks.wandb_report._target_.endswith("WandbReport"), option
        assert "early_stopping" in cfg.callbacks and "model_checkpoint" in cfg.callbacks


# --- no prompt, no hang ----------------------------------------------------------------------


def test_mode_is_offline_without_credentials_and_online_with_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    monkeypatch.delenv("WANDB_MODE")
    assert resolve_wandb_mode("auto") == "offline"
    with caplog.at_level(logging.WARNING, logger="cxrnet.tracking.wandb_logger"):
        assert resolve_wandb_mode("online") == "offline"
    assert "instead of prompting" in caplog.text
    netrc = tmp_path / "netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert resolve_wandb_mode("auto") == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_wandb_mode("auto") == "offline", "WANDB_MODE=offline wins over credentials"
    monkeypatch.delenv("WANDB_MODE")
    # A self-hosted server chosen with `wandb login --host`: its netrc entry counts, no other.
    netrc.write_text("machine wandb.example.org\n  login user\n  password " + "k" * 40 + "\n")
    assert resolve_wandb_mode("auto") == "offline"
    settings = Path(os.environ["WANDB_CONFIG_DIR"]) / "settings"
    settings.parent.mkdir(parents=True, exist_ok=True)
    settings.write_text("[default]\nbase_url = https://wandb.example.org\n")
    assert resolve_wandb_mode("auto") == "online"
    with pytest.raises(ValueError, match="must be 'auto'"):
        resolve_wandb_mode("cloud")  # type: ignore[arg-type]


def test_unreachable_service_falls_back_to_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys
) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens there
    logger = wandb_logger(save_dir=str(tmp_path), mode="online", init_timeout=2)
    with caplog.at_level(logging.WARNING, logger="cxrnet.tracking.wandb_logger"):
        experiment = logger.experiment
    assert experiment.offline
    assert "could not go online" in caplog.text
    experiment.log({"x": 1.0})
    finish_wandb_run()
    assert "wandb sync " in capsys.readouterr().out
    (run_dir,) = offline_runs(tmp_path)
    assert "x" in read_offline_run(run_dir)["history"]


def test_other_ranks_never_touch_wandb(tmp_path: Path) -> None:
    import wandb

    logger = wandb_logger(save_dir=str(tmp_path), mode="offline")
    rank1 = SimpleNamespace(is_global_zero=False, loggers=[logger], sanity_checking=False)
    report = WandbReport(split_csv=str(tmp_path / "split.csv"))
    (tmp_path / "split.csv").write_text("file,split\n")
    checkpoint: dict[str, Any] = {}
    report.on_fit_start(rank1, None)
    report.on_save_checkpoint(rank1, None, checkpoint)
    assert checkpoint == {}
    assert wandb.run is None and logger._experiment is None
    assert not (tmp_path / "wandb").exists()


# --- plain pieces ----------------------------------------------------------------------------


def test_multirun_jobs_are_grouped_by_sweep_and_named_by_overrides(tmp_path: Path) -> None:
    overrides = ["seed=2", "logger=wandb", "data.fold=1", "paths.log_dir=/x", "+trainer.foo=1"]
    assert run_name_from_overrides(overrides) == "data.fold=1,seed=2,trainer.foo=1"
    assert wandb_run_defaults(
        sweep_dir="/logs/train/multiruns/2024-05-01_abc", overrides=overrides
    ) == {
        "group": "2024-05-01_abc",
        "name": "data.fold=1,seed=2,trainer.foo=1",
    }
    assert wandb_run_defaults() == {}
    plain = tmp_path / "plain.ckpt"
    torch.save({"state_dict": {}}, plain)
    assert wandb_run_defaults(ckpt_path=str(plain)) == {}
    torch.save({"state_dict": {}, CHECKPOINT_KEY: {"run_id": "abc123"}}, tmp_path / "w.ckpt")
    assert wandb_run_defaults(ckpt_path=str(tmp_path / "w.ckpt")) == {"id": "abc123"}


def test_confidently_wrong_orders_errors_by_confidence() -> None:
    # Pneumonia probabilities; at 0.5 films 1 and 3 are false alarms, film 2 a miss.
    probs = np.array([0.1, 0.8, 0.4, 0.95, 0.7])
    labels = np.array([0, 0, 1, 0, 1])
    assert confidently_wrong_indices(probs, labels, 0.5, k=10) == [3, 1, 2]
    assert confidently_wrong_indices(probs, labels, 0.5, k=2) == [3, 1]


def _split_report(probs: np.ndarray, labels: np.ndarray) -> SplitReport:
    """A split's report as far as its curves go: they come from its predictions alone."""
    films = tuple(f"{i}.png" for i in range(len(probs)))
    predictions = SplitPredictions(probs, labels, films, ("",) * len(probs))
    return SplitReport(predictions, confusion={}, ece=float("nan"), reliability=None)


def test_the_sinks_curves_are_the_reports_thinned_with_both_ends() -> None:
    part = _split_report(np.array([0.1, 0.4, 0.65, 0.8]), np.array([0, 0, 1, 1]))
    roc = curve_rows(part, "roc", "PNEUMONIA", max_points=2000)
    fpr, tpr = part.curve("roc")
    assert roc == [["PNEUMONIA", float(x), float(y)] for x, y in zip(fpr, tpr, strict=True)]
    assert roc[0][1:] == [0.0, 0.0] and roc[-1][1:] == [1.0, 1.0]
    recall, precision = part.curve("pr")
    assert [row[1:] for row in curve_rows(part, "pr", "PNEUMONIA", 2000)] == [
        [float(x), float(y)] for x, y in zip(recall, precision, strict=True)
    ]
    many = np.random.default_rng(0).random(5000)
    big = _split_report(many, (many > 0.5).astype(np.int64))
    rows = curve_rows(big, "roc", "p", max_points=100)
    assert len(rows) <= 100 and rows[0][1:] == [0.0, 0.0] and rows[-1][1:] == [1.0, 1.0]


def test_a_split_of_one_class_has_no_curve() -> None:
    part = _split_report(np.array([0.2, 0.7, 0.4]), np.array([0, 0, 0]))
    assert part.curve("roc") is None and part.curve("pr") is None
    assert curve_rows(part, "roc", "PNEUMONIA", 2000) == []


def test_thumbnails_are_small_uint8_images() -> None:
    small = thumbnail(torch.rand(1, 224, 160), size=64)
    assert small.shape == (64, 46) and small.dtype.name == "uint8"
    assert thumbnail(torch.ones(1, 32, 32), size=64).shape == (32, 32)
