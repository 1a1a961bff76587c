"""The one parser of Hydra command-line overrides, and dotted-key lookup in a config."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Value = str | int | float | bool | None


@dataclass(frozen=True)
class Override:
    """One Hydra command-line override: ``[+|++|~]key[=value]``."""

    key: str
    value: str | None  # the raw text after '=', None for a bare deletion (``~key``)
    prefix: str = ""  # "", "+", "++" or "~"

    @classmethod
    def parse(cls, text: object) -> Override:
        raw = str(text).strip()
        prefix = re.match(r"^(\+\+|\+|~)?", raw).group(0)  # type: ignore[union-attr]
        key, sep, value = raw[len(prefix) :].partition("=")
        return cls(key.strip(), value if sep else None, prefix)

    @property
    def deleted(self) -> bool:
        return self.prefix == "~"

    def in_group(self, *groups: str) -> bool:
        """True for ``group``, ``group.x`` and ``group/x`` keys of any of ``groups``."""
        return any(
            self.key == group or self.key.startswith((f"{group}.", f"{group}/")) for group in groups
        )

    @property
    def is_hydra(self) -> bool:
        """Hydra's own settings (output folders, launcher): not part of an experiment."""
        return self.in_group("hydra")

    def typed_value(self) -> Value:
        return "(deleted)" if self.deleted else parse_value(self.value or "")

    def __str__(self) -> str:
        return self.prefix + self.key + ("" if self.value is None else f"={self.value}")


def parse_value(text: str) -> Value:
    """An override's value as a number, bool or string, so ``1e-3`` and ``0.001`` compare equal."""
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text.lower() == "null":
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def overrides_as_dict(lines: Iterable[object]) -> dict[str, Value]:
    """``["+a.b=1", "model=x"]`` as ``{"a.b": 1, "model": "x"}``; Hydra's own keys are dropped."""
    parsed: dict[str, Value] = {}
    for line in lines:
        override = Override.parse(line)
        if override.is_hydra or (override.value is None and not override.deleted):
            continue
        parsed[override.key] = override.typed_value()
    return parsed


MISSING = object()


def lookup(config: Mapping[str, Any], dotted: str, default: Any = MISSING) -> Any:
    """``config["a"]["b"]`` for ``"a.b"``, or ``default`` (``MISSING``) where a part is absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


_BARE_STRING = re.compile(r"[A-Za-z_][\w\-./]*")
_HYDRA_WORDS = {"true", "false", "null", "nan", "inf"}


def format_override_value(value: Value) -> str:
    """A value as Hydra's override grammar reads it back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # shortest round-trip form, e.g. 0.00031622776601683794
    if _BARE_STRING.fullmatch(value) and value.lower() not in _HYDRA_WORDS:
        return value
    escaped = value.replace("\\", "\\\\").replace("'", "\\'")
    return f"'{escaped}'"


def format_overrides(params: Mapping[str, Value]) -> list[str]:
    return [f"{key}={format_override_value(value)}" for key, value in params.items()]
