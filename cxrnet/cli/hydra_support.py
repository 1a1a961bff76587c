"""What every Hydra entry point shares: where the configs are, Hydra's version, the job's
overrides, and ``run_hydra``, which calls the ``@hydra.main`` function so that a config Hydra
cannot read is one ``error:`` line. The resolvers the configs use are
``cxrnet.config.register_resolvers``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    ConfigCompositionException,
    MissingConfigException,
    OverrideParseException,
)
from omegaconf import DictConfig, OmegaConf

from cxrnet.cli.exit_codes import USAGE_ERROR_EXIT
from cxrnet.cli.quiet import silence_known_noise
from cxrnet.runs import Override

log = logging.getLogger(__name__)

CONFIG_PATH = "pkg://cxrnet.conf"
HYDRA_VERSION = "1.3"


def job_overrides() -> list[str]:
    """The command-line overrides of the running Hydra job; none outside Hydra."""
    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def reference_config(config_name: str) -> dict[str, Any]:
    """``config_name`` composed with this job's group choices (``experiment=``, ``model/net=``,
    ...) but none of its values, as plain data: what conf/ gives each key, the reference
    ``cxrnet.setting_types.check_setting_types`` compares the job's values with."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    choices = HydraConfig.get().runtime.choices
    kept = [
        text
        for text in job_overrides()
        if (override := Override.parse(text)).key in choices and not override.deleted
    ]
    if GlobalHydra.instance().is_initialized():
        reference = compose(config_name=config_name, overrides=kept)
    else:  # a launcher's worker process that did not carry Hydra's global state over
        with initialize_config_module("cxrnet.conf", version_base=HYDRA_VERSION):
            reference = compose(config_name=config_name, overrides=kept)
    return OmegaConf.to_container(reference, resolve=False)  # type: ignore[return-value]


def check_types(cfg: DictConfig) -> None:
    """Every value of the running job's config has a kind (and range) its key takes, compared
    with what conf/ gives it (``reference_config``); else one ``ConfigError`` naming the key."""
    from cxrnet.setting_types import check_setting_types

    reference = reference_config(HydraConfig.get().job.config_name)
    check_setting_types(OmegaConf.to_container(cfg, resolve=False), reference)  # type: ignore[arg-type]


def allowed_network(cfg: DictConfig) -> str | None:
    """The ``model.net.name`` the user gave eval/predict/export: the one import path a loaded
    checkpoint may name (``cxrnet.models.registry.check_stored_network``)."""
    name = OmegaConf.select(cfg, "model.net.name")
    return None if name is None else str(name)


YAML_TAG_PREFIX = "tag:yaml.org,2002:"


def _yaml_error(error: BaseException) -> yaml.YAMLError | None:
    """The YAML error behind ``error`` (itself, or what it was raised ``from``), if any."""
    while error is not None:
        if isinstance(error, yaml.YAMLError):
            return error
        error = error.__cause__  # type: ignore[assignment]
    return None


def unreadable_config_message(error: BaseException) -> str | None:
    """One line for a config Hydra could not read: an override it cannot parse, a key or a
    config group option that does not exist, or a YAML file it cannot load (a YAML tag such as
    ``!!python/name:os.system``, broken syntax), naming the override or the file and line, and
    the fix; None for any other error."""
    composition = _composition_message(error)
    if composition is not None:
        return composition
    if isinstance(error, OverrideParseException):
        override = str(error.override)
        kind = str(error.message).splitlines()[0].split(":", 1)[0]
        help_url = next((w for w in str(error.message).split() if w.startswith("https://")), "")
        see = f"; see {help_url}" if help_url else ""
        if "!!" in override:
            return (
                f"the override '{override}' cannot be parsed ({kind}): a YAML tag (!!...) is not "
                "allowed on the command line, nothing is built from it; give the plain value "
                f"instead, quoted if it holds spaces or brackets (key='\"...\"'){see}"
            )
        return (
            f"the override '{override}' cannot be parsed ({kind}): write it as key=value, with "
            f"the value quoted if it holds spaces or brackets (key='\"...\"'){see}"
        )
    found = _yaml_error(error)
    if found is None:
        return None
    mark = getattr(found, "problem_mark", None) or getattr(found, "context_mark", None)
    where = "a YAML config" if mark is None else f"{mark.name}, line {mark.line + 1}"
    problem = str(getattr(found, "problem", None) or found).strip()
    tag = re.search(r"for the tag '([^']+)'", problem)
    if isinstance(found, yaml.constructor.ConstructorError) and tag:
        name = tag.group(1).replace(YAML_TAG_PREFIX, "!!")
        return (
            f"{where}: the YAML tag {name} is not allowed: configs are plain data (mappings, "
            "lists, strings, numbers) and nothing is built or run from a tag; remove the tag "
            "and give the plain value (a class a setting builds is named by its _target_)"
        )
    return f"{where}: not valid YAML ({problem}); fix the file's syntax"


def _composition_message(error: BaseException) -> str | None:
    """Hydra's refusal of an option no config group has (``experiment=bogus``) or of a key the
    config lacks (``data.batchsize=3``), as one line; None for any other error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if isinstance(error, MissingConfigException) and lines:
        missing = re.search(r"Could not find '([^']+)'", lines[0])
        if missing is None:
            return None
        group, _, option = missing.group(1).rpartition("/")
        options = []
        for line in lines[1:]:
            if line.startswith("Config search path"):
                break
            if not line.startswith("Available options"):
                options.append(line)
        known = f"; {group} takes one of {', '.join(options)}" if options else ""
        return f"{group}={option}: no such config in conf/{group}/{known}"
    override = re.search(r"Could not override '([^']+)'", lines[0]) if lines else None
    if isinstance(error, ConfigCompositionException) and override is not None:
        key = override.group(1)
        cause = str(error.__cause__ or "").strip().splitlines()
        why = f" ({cause[0]})" if cause else ""
        return (
            f"{key} is not a setting of this command{why}: check its spelling (--cfg job prints "
            f"every setting), or add a new key with +{key}=..."
        )
    return None


def _brief_unreadable_config(func: Callable[[], Any]) -> Any:
    try:
        return func()
    except Exception as error:
        message = unreadable_config_message(error)
        if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(USAGE_ERROR_EXIT) from None


@contextlib.contextmanager
def _brief_config_errors() -> Iterator[None]:
    # Hydra reads the overrides and the YAML files inside its private run_and_report, which
    # prints any error and exits 1 (a traceback for YAML files) before an entry point sees it,
    # and offers no hook for it; the errors are caught here inside it instead. SystemExit passes
    # through its ``except Exception``. Should a Hydra release move the function, Hydra's own
    # report stays, and tests/console/test_yaml_tags.py fails.
    try:
        from hydra._internal import utils as hydra_internal
    except ImportError:  # pragma: no cover - a Hydra without it
        yield
        return
    original = getattr(hydra_internal, "run_and_report", None)
    if original is None:  # pragma: no cover
        yield
        return

    def run_and_report(func: Callable[[], Any]) -> Any:
        return original(lambda: _brief_unreadable_config(func))

    hydra_internal.run_and_report = run_and_report
    try:
        yield
    finally:
        hydra_internal.run_and_report = original


def run_hydra(hydra_main: Callable[[], object]) -> None:
    """Call a ``@hydra.main`` function; an override Hydra cannot parse or a YAML config it cannot
    load ends with one ``error:`` line naming it and exit 2 (``HYDRA_FULL_ERROR=1``: Hydra's
    traceback), like every other user error (``cxrnet.cli.exit_codes``)."""
    silence_known_noise()
    with _brief_config_errors():
        hydra_main()
