"""trainer.precision=auto: bf16-mixed where the device the run uses computes bf16 natively."""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers.console import QUICK, run_folder, run_train
from hydra.utils import instantiate
from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

from cxrnet import hardware
from cxrnet.hardware import resolve_precision, resolve_trainer_precision, run_device
from cxrnet.passes.checkpoint_eval import evaluate_checkpoint
from cxrnet.training.run import run

TRAINER_CONFIGS = sorted(
    Path(str(p)).stem
    for p in importlib.resources.files("cxrnet.conf").joinpath("trainer").iterdir()
    if p.name.endswith(".yaml")
)
EXPLICIT = ["32-true", "bf16-mixed", "16-mixed", "bf16-true", "64-true", 32, 16, "bf16", None]


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):
    """``machine(cpu_bf16=..., amx=..., cuda=..., cuda_bf16=...)``: what detection reports."""

    def _set(
        cpu_bf16: bool = False, amx: bool = False, cuda: bool = False, cuda_bf16: bool = False
    ) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: cpu_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: cuda_bf16)
        monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))

    return _set


@pytest.mark.parametrize(
    ("features", "expected"),
    [
        ({"cpu_bf16": True}, "bf16-mixed"),
        ({"amx": True}, "bf16-mixed"),
        ({}, "32-true"),  # bf16 emulated: slower than float32
    ],
)
@pytest.mark.parametrize("accelerator", ["cpu", "auto", CPUAccelerator()])
def test_auto_on_a_cpu_is_bf16_only_where_the_cpu_computes_it(
    machine, features: dict[str, bool], expected: str, accelerator: object
) -> None:
    machine(**features)
    assert run_device(accelerator) == "cpu"
    assert resolve_precision("auto", accelerator) == expected


@pytest.mark.parametrize(("cuda_bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto", CUDAAccelerator()])
def test_auto_on_a_gpu_follows_the_gpu_not_the_cpu(
    machine, cuda_bf16: bool, expected: str, accelerator: object
) -> None:
    machine(cpu_bf16=not cuda_bf16, cuda=True, cuda_bf16=cuda_bf16)
    assert run_device(accelerator) == "cuda"
    assert resolve_precision("auto", accelerator) == expected


def test_the_accelerator_asked_for_decides_not_the_best_one_present(machine) -> None:
    machine(cpu_bf16=False, cuda=True, cuda_bf16=True)
    assert resolve_precision("auto", "cpu") == "32-true"
    machine(cpu_bf16=True, cuda=False)
    assert resolve_precision("auto", "auto") == "bf16-mixed"  # auto without a GPU is the CPU
    assert resolve_precision("auto", "mps") == "32-true"  # not measured there: float32


@pytest.mark.parametrize("precision", EXPLICIT)
@pytest.mark.parametrize("accelerator", ["cpu", "gpu", "auto"])
def test_explicit_precisions_pass_through_unchanged(
    machine, precision: object, accelerator: str
) -> None:
    machine(cpu_bf16=True, cuda=True, cuda_bf16=True)
    assert resolve_precision(precision, accelerator) == precision


@pytest.mark.parametrize("name", TRAINER_CONFIGS)
def test_every_trainer_config_resolves_auto_for_its_device(
    compose_cfg, machine, name: str, capsys
) -> None:
    # A CUDA GPU with bf16 beside a CPU without: each config gets its own device's answer.
    machine(cpu_bf16=False, cuda=True, cuda_bf16=True)
    cfg = compose_cfg("train", [f"trainer={name}", "trainer.precision=auto"])
    uses_gpu = cfg.trainer.accelerator in ("gpu", "auto")
    expected = "bf16-mixed" if uses_gpu else "32-true"
    assert resolve_trainer_precision(cfg) == expected
    assert cfg.trainer.precision == expected
    device = "cuda" if uses_gpu else "cpu"
    native = "native" if uses_gpu else "no native"
    assert capsys.readouterr().out == (
        f"trainer.precision=auto: {expected} ({native} bfloat16 on {device})\n"
    )
    # Resolved once: the value is explicit now, so a second pass changes and prints nothing.
    assert resolve_trainer_precision(cfg) == expected
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("name", [n for n in TRAINER_CONFIGS if n in ("cpu", "ddp_cpu", "default")])
def test_lightning_builds_a_trainer_with_what_auto_resolves_to_here(compose_cfg, name: str):
    cfg = compose_cfg("train", [f"trainer={name}", "trainer.precision=auto"])
    resolved = resolve_trainer_precision(cfg)
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.precision == resolved == hardware.auto_precision(run_device("auto"))


@pytest.mark.slow
def test_cxrnet_train_with_precision_auto_records_what_it_resolved_to(
    synthetic_root: Path, tmp_path: Path
) -> None:
    expected = resolve_precision("auto", "auto")  # this machine, as the subprocess sees it
    done = run_train([*QUICK, f"data.root={synthetic_root}", "trainer.precision=auto"], tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("trainer.precision=auto: ") == 1
    assert f"trainer.precision=auto: {expected} (" in done.stdout
    run_dir = run_folder(done.stdout)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "completed"
    assert record["extra"]["precision"] == expected
    assert "trainer.precision=auto" in record["overrides"]  # what was asked, beside what ran
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["trainer"]["precision"] == expected


def test_a_subtype_run_and_its_eval_build_their_trainers_with_precision_auto(
    compose_cfg, synthetic_root: Path
) -> None:
    """The three-class task validates and tests through the Trainer, in training and in
    cxrnet-eval: both resolve auto (and score alike, the same precision on the same data)."""
    expected = resolve_precision("auto", "auto")
    overrides = [f"data.root={synthetic_root}", "data.task=subtype", "trainer.precision=auto"]
    cfg = compose_cfg("train", [*QUICK, *overrides, "trainer.max_epochs=1"])
    record = run(cfg)
    assert record.extra["precision"] == expected
    eval_cfg = compose_cfg(
        "eval",
        [f"ckpt_path={record.paths['best_checkpoint']}", "stages=[test]", "trainer.precision=auto"],
    )
    evaluated = evaluate_checkpoint(eval_cfg)
    assert eval_cfg.trainer.precision == expected
    assert evaluated["test/auroc"] == pytest.approx(record.metrics["test/auroc"], abs=1e-6)


def test_predict_and_export_still_start_without_importing_lightning() -> None:
    """They share hydra_support with the entry points that resolve the precision."""
    code = "import sys, cxrnet.cli.predict, cxrnet.cli.export; print('lightning' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
