"""The layers contract in pyproject.toml holds, and it catches an import that breaks it.

The contract (``[tool.importlinter]``) is what .ci/run checks with ``lint-imports``; these tests
run the same command on the repository and on scratch copies with one import added, so a
contract that stopped seeing imports (a wrong root package, a layer spelt wrong) fails here too.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.exists(), reason="lint-imports is not installed (the test extra has it)"
)


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    # Run from ``root``: lint-imports reads its pyproject.toml and finds the cxrnet package
    # there before the installed one. No cache, so a scratch copy is analysed afresh.
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )


def scratch_copy(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "cxrnet", tmp_path / "cxrnet", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def add_lines(module: Path, code: str) -> int:
    """Append ``code`` to ``module`` after a blank line; the line number of its last line."""
    text = module.read_text()
    module.write_text(text + "\n\n" + code)
    return text.count("\n") + 2 + code.count("\n")


def test_the_repository_keeps_every_contract() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_a_lazy_upward_import_breaks_the_layers_contract_naming_its_line(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    # Inside a function, as the lazy imports that hid the last cycles were.
    line = add_lines(
        root / "cxrnet/data/records.py",
        "def _upward():\n    from cxrnet.training import run  # noqa: F401\n",
    )
    result = lint_imports(root)
    assert result.returncode == 1, result.stdout
    assert "cxrnet.data is not allowed to import cxrnet.training" in result.stdout
    assert f"cxrnet.data.records -> cxrnet.training.run (l.{line})" in result.stdout


def test_an_import_between_independent_siblings_breaks_the_contract(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    add_lines(root / "cxrnet/comparison/stat.py", "from cxrnet.tracking import wandb_folders\n")
    result = lint_imports(root)
    assert result.returncode == 1, result.stdout
    assert "cxrnet.comparison is not allowed to import cxrnet.tracking" in result.stdout


def test_a_type_checking_import_counts(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    add_lines(
        root / "cxrnet/evaluation/confusion.py",
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
        "    from cxrnet.models.module import ClassifierModule  # noqa: F401\n",
    )
    result = lint_imports(root)
    assert result.returncode == 1, result.stdout
    assert "cxrnet.evaluation is not allowed to import cxrnet.models" in result.stdout


def test_an_import_circle_inside_a_package_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    # decode imports records; records importing decode back closes a circle inside data/.
    add_lines(
        root / "cxrnet/data/records.py",
        "def _circle():\n    from cxrnet.data import decode  # noqa: F401\n",
    )
    result = lint_imports(root)
    assert result.returncode == 1, result.stdout
    assert "No cycles are allowed in cxrnet.data" in result.stdout
    assert ".records -> .decode" in result.stdout or ".decode -> .records" in result.stdout
