"""The run record: one type written by every job, statuses from exceptions, the override parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cxrnet.runs import (
    MISSING,
    Override,
    RecordError,
    RunRecord,
    RunRecorder,
    RunStatus,
    RunStopped,
    find_job_dirs,
    format_override_value,
    lookup,
    overrides_as_dict,
    read_record,
    write_record,
)


def test_a_record_round_trips_through_its_file(tmp_path: Path) -> None:
    record = RunRecord(
        RunStatus.COMPLETED,
        str(tmp_path),
        overrides=("seed=1", "data.fold=2"),
        monitor="val/auroc",
        metrics={"val/auroc": 0.9, "val/loss": float("nan")},
        paths={"best_checkpoint": "x.ckpt"},
        versions={"torch": "2"},
        extra={"trial": 3},
    )
    write_record(record)
    payload = json.loads((tmp_path / "metrics.json").read_text())
    assert payload["schema"] == 2 and payload["status"] == "completed"
    assert payload["metrics"]["val/loss"] is None  # NaN is not JSON: written as null...
    back = read_record(tmp_path)
    assert back is not None
    assert back.replace(metrics={}) == record.replace(metrics={})
    assert back.metrics == {"val/auroc": 0.9}  # ...and read back as no metric at all


def test_records_of_older_cxrnet_still_read(tmp_path: Path) -> None:
    legacy = {"status": "completed", "best_model_path": "b.ckpt", "metrics": {"val/auroc": 1}}
    (tmp_path / "metrics.json").write_text(json.dumps(legacy))
    record = read_record(tmp_path)
    assert record is not None and record.status is RunStatus.COMPLETED
    assert record.paths["best_model_path"] == "b.ckpt" and record.metrics == {"val/auroc": 1.0}
    assert read_record(tmp_path / "nothing") is None
    (tmp_path / "metrics.json").write_text("{half")
    with pytest.raises(RecordError, match=r"metrics\.json is unreadable"):
        read_record(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "exploded"}))
    with pytest.raises(RecordError, match="unknown status 'exploded'"):
        read_record(tmp_path)


def _recorded(tmp_path: Path, error: BaseException | None) -> tuple[list[str], RunRecord]:
    statuses: list[str] = []
    recorder = RunRecorder(tmp_path, "cxrnet-train", ["seed=3"], monitor="val/auroc")
    try:
        with recorder:
            statuses.append(json.loads((tmp_path / "metrics.json").read_text())["status"])
            if error is not None:
                raise error
            recorder.complete({"val/auroc": 0.75}, paths={"best_checkpoint": "c.ckpt"})
    except BaseException as raised:
        assert raised is error  # the recorder records; it never swallows
    final = read_record(tmp_path)
    assert final is not None
    statuses.append(final.status.value)
    return statuses, final


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (None, "completed"),
        (ValueError("bad"), "failed"),
        (KeyboardInterrupt(), "interrupted"),
        (RunStopped("below the bar", RunStatus.PRUNED), "pruned"),
    ],
)
def test_the_recorder_writes_running_then_how_the_job_ended(
    tmp_path: Path, error: BaseException | None, status: str
) -> None:
    statuses, final = _recorded(tmp_path, error)
    assert statuses == ["running", status]
    assert final.overrides == ("seed=3",) and final.command == "cxrnet-train"
    assert final.started_at and final.ended_at and final.duration_s is not None
    # Every record names the versions that produced it.
    assert {"python", "cxrnet", "torch", "lightning"} <= set(final.versions)
    if error is None:
        assert final.metrics == {"val/auroc": 0.75} and final.error is None
        assert final.paths == {"best_checkpoint": "c.ckpt"}
    else:
        assert final.metrics == {} and type(error).__name__ in (final.error or "")


def test_a_job_that_reports_nothing_is_not_completed(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, "cxrnet-eval"):
        pass
    record = read_record(tmp_path)
    assert record is not None and record.status is RunStatus.FAILED
    assert "without reporting a result" in (record.error or "")


def test_a_rank_other_than_zero_writes_nothing(tmp_path: Path) -> None:
    with RunRecorder(tmp_path, "cxrnet-train", write=False) as recorder:
        recorder.complete({"val/auroc": 0.5})
    assert recorder.record.status is RunStatus.COMPLETED
    assert not (tmp_path / "metrics.json").exists()


@pytest.mark.parametrize(
    ("text", "key", "value", "prefix"),
    [
        ("seed=1", "seed", "1", ""),
        ("+trainer.strategy=ddp", "trainer.strategy", "ddp", "+"),
        ("++a.b=x=y", "a.b", "x=y", "++"),
        ("~callbacks.early_stopping", "callbacks.early_stopping", None, "~"),
        ("model/net=resnet18", "model/net", "resnet18", ""),
    ],
)
def test_the_override_parser(text: str, key: str, value: str | None, prefix: str) -> None:
    override = Override.parse(text)
    assert (override.key, override.value, override.prefix) == (key, value, prefix)
    assert str(override) == text


def test_overrides_as_values_drop_hydras_own_keys() -> None:
    parsed = overrides_as_dict(
        [
            "seed=1",
            "model.optimizer.lr=1e-3",
            "hydra.run.dir=x",
            "hydra/launcher=parallel",
            "data.root=null",
            "flag=true",
            "name='a b'",
            "~logger",
        ]
    )
    assert parsed == {
        "seed": 1,
        "model.optimizer.lr": 0.001,
        "data.root": None,
        "flag": True,
        "name": "a b",
        "logger": "(deleted)",
    }
    assert Override.parse("hparams_search.n_trials=3").in_group("hparams_search")
    assert not Override.parse("hparams_searching=3").in_group("hparams_search")


@pytest.mark.parametrize("value", [None, True, 3, 0.00031622776601683794, "a b", "null", "x/y"])
def test_formatted_values_parse_back(value: object) -> None:
    (parsed,) = overrides_as_dict([f"k={format_override_value(value)}"]).values()
    assert parsed == value


def test_lookup_tells_a_missing_key_from_a_null_one() -> None:
    config = {"model": {"net": {"weights": None, "dropout": 0.3}}}
    assert lookup(config, "model.net.dropout") == 0.3
    assert lookup(config, "model.net.weights") is None
    assert lookup(config, "model.net.nope") is MISSING
    assert lookup(config, "model.net.dropout.deeper") is MISSING


def test_job_folders_are_found_below_a_sweep_in_number_order(tmp_path: Path) -> None:
    for name in ("10", "2", "1"):
        write_record(RunRecord(RunStatus.COMPLETED, str(tmp_path / "sweep" / name)))
    (tmp_path / "sweep" / "3" / ".hydra").mkdir(parents=True)  # killed before its record
    (tmp_path / "sweep" / "3" / ".hydra" / "overrides.yaml").write_text("[]")
    (tmp_path / "sweep" / "2" / "sub").mkdir()  # a job's own folders are not searched
    write_record(RunRecord(RunStatus.COMPLETED, str(tmp_path / "sweep" / "2" / "sub")))
    found = [p.name for p in find_job_dirs(tmp_path / "sweep")]
    assert found == ["1", "2", "3", "10"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        find_job_dirs(tmp_path / "missing")
