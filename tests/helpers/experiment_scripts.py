"""Loading the scripts under experiments/ (not a package) as modules, for their tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def load_script(study: str, name: str) -> ModuleType:
    """``experiments/<study>/<name>.py`` as the module ``<study>_<name>``."""
    spec = importlib.util.spec_from_file_location(
        f"{study}_{name}", EXPERIMENTS / study / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
