"""Checkpoints are plain data: loading one never runs code, and a bad file is named in one line."""

from __future__ import annotations

import functools
import zipfile
from pathlib import Path

import pytest
import torch
from helpers.console import run_script

from cxrnet.models.checkpoint import load_checkpoint
from cxrnet.models.module import ClassifierModule
from cxrnet.models.optimization import build_component, component_config
from cxrnet.user_errors import CheckpointError

NET = {"name": "notebook_cnn", "image_size": 32, "widths": [4, 4, 8, 8], "hidden": 8}


class _Payload:
    """Unpickling this creates ``marker``: the harmless stand-in for code a crafted file runs."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {}, "hyper_parameters": {"net": _Payload(marker)}}, path)
    return path


def test_module_hyperparameters_are_plain_data_and_build_the_optimizer() -> None:
    module = ClassifierModule(
        net=NET,
        optimizer=functools.partial(torch.optim.AdamW, lr=2e-3, betas=(0.8, 0.9)),
        scheduler={
            "_target_": "torch.optim.lr_scheduler.StepLR",
            "_partial_": True,
            "step_size": 3,
        },
    )
    assert module.hparams.optimizer == {
        "_target_": "torch.optim.adamw.AdamW",
        "lr": 2e-3,
        "betas": [0.8, 0.9],
    }
    assert module.hparams.scheduler == {
        "_target_": "torch.optim.lr_scheduler.StepLR",
        "step_size": 3,
    }
    config = module.configure_optimizers()
    assert isinstance(config["optimizer"], torch.optim.AdamW)
    assert config["optimizer"].param_groups[0]["betas"] == (0.8, 0.9)
    assert config["lr_scheduler"]["scheduler"].step_size == 3


def test_stored_optimizer_config_may_only_name_an_optimizer(tmp_path: Path) -> None:
    """A checkpoint's configuration cannot be used to call an arbitrary function."""
    config = component_config({"_target_": "subprocess.run", "args": "true"})
    with pytest.raises(ValueError, match=r"'subprocess\.run' is not a subclass of Optimizer"):
        build_component(config, (torch.optim.Optimizer,), [])
    with pytest.raises(ValueError, match=r"cannot import 'no\.such\.Thing'"):
        build_component({"_target_": "no.such.Thing"}, (torch.optim.Optimizer,), [])


def test_a_crafted_checkpoint_is_refused_without_running_its_payload(tmp_path: Path) -> None:
    marker = tmp_path / "payload-ran"
    path = _crafted_checkpoint(tmp_path / "crafted.ckpt", marker)
    with pytest.raises(CheckpointError, match=r"crafted\.ckpt holds pickled objects") as error:
        load_checkpoint(path)
    assert "it needs getattr" in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "not a zip archive"),
        (b"<html>404 Not Found</html>", "not a zip archive"),
    ],
)
def test_damaged_checkpoints_are_named_in_one_line(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    path = tmp_path / "bad.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expected) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_truncated_checkpoint_and_a_missing_one_are_named(tmp_path: Path) -> None:
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1000)}}, whole)
    cut = tmp_path / "cut.ckpt"
    data = whole.read_bytes()
    # Keep the zip directory but lose part of a tensor: zip says yes, torch says damaged.
    with zipfile.ZipFile(whole) as archive:
        names = archive.namelist()
    assert names
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{cut}.*(damaged|not a zip)"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match=rf"{tmp_path / 'nope.ckpt'} does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        torch.save({"weights": 1}, tmp_path / "other.ckpt")
        load_checkpoint(tmp_path / "other.ckpt")


@pytest.mark.parametrize(
    "command", [pytest.param("cxrnet-eval", marks=pytest.mark.slow), "cxrnet-train"]
)
def test_the_console_scripts_refuse_a_crafted_checkpoint_before_any_data_work(
    tmp_path: Path, command: str
) -> None:
    """``ckpt_path`` to a file whose pickle would run code, with W&B on: refused, nothing runs."""
    marker = tmp_path / "payload-ran"
    path = _crafted_checkpoint(tmp_path / "crafted.ckpt", marker)
    args = [f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}"]
    if command == "cxrnet-train":
        args += ["debug=fast", "logger=wandb", f"data.root={tmp_path / 'no-data-needed'}"]
    done = run_script(command, args, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert not marker.exists()
    assert f"checkpoint {path} holds pickled objects" in done.stderr
    assert "Traceback" not in done.stderr
    # Refused before the data was looked at: the missing data root is never mentioned.
    assert "no-data-needed" not in done.stderr


@pytest.mark.slow  # console runs the default tier's 5-minute budget leaves to the slow tier
@pytest.mark.parametrize("name", ["missing.ckpt", "corrupt.ckpt"])
def test_cxrnet_eval_names_a_missing_or_corrupt_checkpoint_in_one_line(
    tmp_path: Path, name: str
) -> None:
    """Row: ``invalid load key`` without the path, after a 20-55 line traceback."""
    (tmp_path / "corrupt.ckpt").write_bytes(b"\x80\x02\x8a\nlz\xfc\x9cF\xf9 j\xa8P\x19.")
    path = tmp_path / name
    args = [f"ckpt_path={path}", f"paths.log_dir={tmp_path / 'logs'}"]
    done = run_script("cxrnet-eval", args, tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and "invalid load key" not in done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert f"checkpoint {path} " in line
    assert ("does not exist" if name == "missing.ckpt" else "damaged") in line
