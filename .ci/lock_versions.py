"""Write constraints.txt: the exact versions of cxrnet's dependencies installed here.

Run from the repository root, in the environment the test suite just passed in:

    .venv/bin/python .ci/lock_versions.py > constraints.txt

Only cxrnet's dependencies (every extra included) and theirs are written, found through the
installed packages' metadata, so tools installed by hand into the same environment stay out.
"""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def dependency_closure(root: str) -> dict[str, str]:
    """Installed name and version of every package ``root`` needs, with all of its extras."""
    top = distribution(root)
    wanted = [
        (Requirement(text), set(top.metadata.get_all("Provides-Extra") or []))
        for text in (top.requires or [])
    ]
    found: dict[str, str] = {}
    # A package reached again with other extras (fsspec, then fsspec[http]) needs more packages.
    seen: set[tuple[str, frozenset[str]]] = set()
    while wanted:
        requirement, extras = wanted.pop()
        environment = [{"extra": extra} for extra in extras or {""}]
        if requirement.marker and not any(requirement.marker.evaluate(e) for e in environment):
            continue
        key = canonicalize_name(requirement.name)
        if (key, frozenset(requirement.extras)) in seen:
            continue
        seen.add((key, frozenset(requirement.extras)))
        try:
            dist = distribution(requirement.name)
        except PackageNotFoundError:
            sys.exit(f"{requirement.name} is needed by cxrnet but not installed: install .[test]")
        found[key] = f"{dist.metadata['Name']}=={dist.version}"
        wanted += [(Requirement(text), set(requirement.extras)) for text in (dist.requires or [])]
    found.pop(canonicalize_name(root), None)
    return found


def main() -> None:
    pins = dependency_closure("cxrnet")
    print("# Versions the test suite passed with; regenerate with .ci/lock_versions.py.")
    print(f"# Python {platform.python_version()} on {platform.system()} {platform.machine()}.")
    print('# Install with: pip install -e ".[test]" -c constraints.txt')
    for key in sorted(pins):
        print(pins[key])


if __name__ == "__main__":
    main()
