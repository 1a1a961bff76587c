"""Plain data: what checkpoints hold, so they load with ``torch.load(weights_only=True)``.

Hydra hands configuration over as ``DictConfig``/``ListConfig`` and code passes ``Path`` objects;
pickled into a checkpoint, each of those is a class that loading must import and call. Converted
here to dicts, lists, strings and numbers, a checkpoint needs no code to be read back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

PlainData = dict[str, Any] | list[Any] | str | int | float | bool | None


def plain_data(value: Any) -> PlainData:
    """``value`` with mappings as dicts, sequences as lists and paths as strings.

    Raises ``TypeError`` naming the type for anything else (a function, a module, an object):
    such a value must be stored as configuration (a ``_target_`` and its arguments) instead.
    """
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, bytes):
        return [plain_data(item) for item in value]
    raise TypeError(
        f"{type(value).__module__}.{type(value).__qualname__} is not plain data; store it as "
        "configuration ({'_target_': 'package.Class', ...arguments}) instead"
    )
