"""A command line that answers at once: ``--help``, composing the config and the checks that end
a run with a usage error import neither torch, Lightning nor W&B (they take seconds to import).

Each console script runs in a subprocess as a user starts it; an exit hook records which of the
heavy packages were imported by then. No timings are asserted (README, "Start-up time").
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.console import MODULES, console_script, script_env

HEAVY = ("torch", "lightning", "wandb", "torchmetrics")

# Runs the console script (or its module) as __main__ and, at exit, writes the heavy packages
# then imported to the file named by argv[1].
_PROBE = """
import atexit, json, runpy, sys
report, command = sys.argv[1], sys.argv[2:]
heavy = {heavy!r}
atexit.register(
    lambda: open(report, "w").write(json.dumps(sorted(m for m in heavy if m in sys.modules)))
)
if command[0] == "-m":
    sys.argv = [command[1], *command[2:]]
    runpy.run_module(command[1], run_name="__main__", alter_sys=True)
else:
    sys.argv = command
    runpy.run_path(command[0], run_name="__main__")
"""


def _run(name: str, args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, list]:
    script = console_script(name)
    command = script if len(script) == 1 else script[1:]  # [python, -m, module] -> [-m, module]
    report = tmp_path / "imported.json"
    result = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY), str(report), *command, *args],
        cwd=tmp_path,
        env=script_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.is_file(), f"{name} {args}: no exit report\n{result.stdout}\n{result.stderr}"
    return result, json.loads(report.read_text())


@pytest.mark.parametrize("name", sorted(MODULES))
def test_help_imports_no_heavy_package(tmp_path: Path, name: str) -> None:
    result, imported = _run(name, ["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    # Hydra's help for the Hydra apps, argparse's usage (naming the program) for the others.
    assert "Powered by Hydra" in result.stdout or f"usage: {name}" in result.stdout
    assert imported == [], f"{name} --help imported {imported}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["model.net.name=nope"], "model.net.name='nope' is not a registered network"),
        (["monitor=val/nope"], "monitor='val/nope' is not a validation metric"),
        (["trainer.max_epochs=0"], "trainer.max_epochs=0 trains nothing"),
    ],
)
def test_train_usage_error_imports_no_heavy_package(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result, imported = _run("cxrnet-train", args, tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"error: {message}" in result.stderr
    assert imported == [], f"cxrnet-train {args} imported {imported}"


def test_resuming_opens_the_checkpoint_before_training(tmp_path: Path) -> None:
    """A checkpoint to resume from is the one check that may import torch (to open it)."""
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    result, _ = _run("cxrnet-train", [f"ckpt_path={broken}"], tmp_path)
    assert result.returncode == 2, result.stderr
    assert str(broken) in result.stderr


@pytest.mark.slow  # a console run the default tier's 5-minute budget leaves to the slow tier
def test_builtin_network_catalogue_matches_the_registrations() -> None:
    """registry.BUILTIN_NETWORKS names exactly what the network modules register, each under
    the module that registers it (a fresh interpreter: no test's own registrations)."""
    probe = """
import importlib, json, pkgutil
import cxrnet.models
from cxrnet.models import registry
owners = {}
for info in pkgutil.iter_modules(cxrnet.models.__path__, "cxrnet.models."):
    before = set(registry._REGISTRY) | set(registry._FAMILIES)
    importlib.import_module(info.name)
    for name in (set(registry._REGISTRY) | set(registry._FAMILIES)) - before:
        owners[name] = info.name
print(json.dumps(owners))
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, check=True
    )
    owners = json.loads(result.stdout.splitlines()[-1])
    from cxrnet.models.registry import BUILTIN_FAMILIES, BUILTIN_NETWORKS

    assert owners == {**BUILTIN_NETWORKS, **BUILTIN_FAMILIES}
