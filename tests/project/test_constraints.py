"""constraints.txt pins an exact version of every dependency pyproject.toml names."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from 3.11")


def pins() -> dict[str, Version]:
    """Name to pinned version; every line must be a plain ``name==version``."""
    found: dict[str, Version] = {}
    for number, line in enumerate((REPO / "constraints.txt").read_text().splitlines(), 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        (specifier,) = requirement.specifier  # exactly one specifier
        where = f"constraints.txt line {number}: {line!r}"
        assert specifier.operator == "==" and "*" not in specifier.version, where
        assert requirement.marker is None and not requirement.extras and not requirement.url, where
        key = canonicalize_name(requirement.name)
        assert key not in found, f"{where} pins {key} a second time"
        found[key] = Version(specifier.version)
    return found


def declared() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["dependencies"] + [
        text for extra in project["optional-dependencies"].values() for text in extra
    ]
    return [Requirement(text) for text in texts]


def test_every_declared_dependency_is_pinned_within_its_range() -> None:
    pinned = pins()
    for requirement in declared():
        key = canonicalize_name(requirement.name)
        assert key in pinned, f"{requirement.name} (pyproject.toml) is not in constraints.txt"
        assert requirement.specifier.contains(pinned[key], prereleases=True), (
            f"constraints.txt pins {key}=={pinned[key]}, outside pyproject's {requirement}"
        )


def test_cxrnet_itself_is_not_pinned() -> None:
    # A pin on the project would make `pip install -e . -c constraints.txt` refuse new versions.
    assert "cxrnet" not in pins()
