"""Every setting's type, checked once, before any film is decoded.

A command line gives values as Hydra's parser reads them: ``trainer.max_epochs=abc`` is the
string ``"abc"``, ``=1.5`` a float, ``data.keep_in_val=val`` a string where a list belongs.
Passed on, such a value fails deep inside torch or Lightning (a traceback, or a bare
``AssertionError`` after the films are decoded) or, worse, is read as something else (the
characters ``('v', 'a', 'l')``). Here each value is compared with the *reference*: the same
config composed without the command line's value overrides (its group choices, such as
``experiment=adult``, kept), so the type a key has in ``conf/`` is the type it must keep.
Keys whose reference value is null, or that take more than one type, are declared in
``DECLARED``. A refusal is a ``ConfigError`` naming the key, the value and what it accepts.

Plain data in, nothing else: no Hydra here (the entry points compose the reference).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cxrnet.user_errors import ConfigError

# The kinds of value a setting takes, as the messages name them.
INT, FLOAT, BOOL, STR, LIST, MAPPING, NULL = (
    "int",
    "float",
    "bool",
    "str",
    "list",
    "mapping",
    "null",
)


@dataclass(frozen=True)
class Accepts:
    """What one setting takes: some kinds of value, for numbers their range, and where it names
    them the only values it takes."""

    kinds: tuple[str, ...]
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[object, ...] = ()  # the only values it takes, where it names them

    def describe(self) -> str:
        if self.choices:
            return "one of " + ", ".join(dict.fromkeys(str(choice) for choice in self.choices))
        kinds = " or ".join(self.kinds)
        if self.minimum is not None and self.maximum is not None:
            return f"{kinds} in [{self.minimum:g}, {self.maximum:g}]"
        if self.minimum is not None:
            return f"{kinds} >= {self.minimum:g}"
        return kinds


def kind_of(value: Any) -> str:
    """The kind of a plain value (bool before int: ``True`` is no epoch count)."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        return STR
    if isinstance(value, Mapping):
        return MAPPING
    if isinstance(value, list | tuple):
        return LIST
    return type(value).__name__


# Keys whose reference alone does not say what they take: null by default, or more than one
# kind. Patterns match the dotted key (fnmatch); the first that matches decides.
PROBABILITY = (0.0, 1.0)
PRECISIONS: tuple[object, ...] = (
    "auto",
    "64-true",
    "32-true",
    "16-mixed",
    "bf16-mixed",
    "16-true",
    "bf16-true",
    "transformer-engine",
    "transformer-engine-float16",
    "64",
    "32",
    "16",
    "bf16",
    64,
    32,
    16,
)
DECLARED: dict[str, Accepts] = {
    "seed": Accepts((INT,)),
    "ckpt_path": Accepts((STR, NULL)),
    "tags": Accepts((LIST,)),
    "data.root": Accepts((STR, NULL)),
    "data.sources": Accepts((MAPPING, NULL)),
    "data.source_roles": Accepts((MAPPING, NULL)),
    "data.source_train_size": Accepts((MAPPING, NULL)),
    "data.findings": Accepts((LIST, NULL)),
    "data.pin_memory": Accepts((BOOL, NULL)),
    "data.holdout_seed": Accepts((INT, NULL), 0),
    "data.num_workers": Accepts((INT, STR), 0),
    "data.decode_workers": Accepts((INT, STR), 0),
    "data.batch_size": Accepts((INT,), 1),
    "data.eval_batch_size": Accepts((INT,), 1),
    "data.image_size": Accepts((INT,), 1),
    "data.val_fraction": Accepts((FLOAT,), 0.0, 1.0),
    "data.holdout_fraction": Accepts((FLOAT,), 0.0, 1.0),
    "data.augment.rotate": Accepts((INT, FLOAT), 0),
    "model.net.image_size": Accepts((INT, STR), 1),
    "model.net.weights": Accepts((STR, NULL)),
    "model.net.dropout": Accepts((FLOAT,), 0.0, 1.0),
    "model.optimizer.lr": Accepts((FLOAT,), 0.0),
    "model.optimizer.weight_decay": Accepts((FLOAT,), 0.0),
    "model.label_smoothing": Accepts((FLOAT,), 0.0, 1.0),
    "callbacks.*.every_n_train_steps": Accepts((INT, NULL), 1),
    "callbacks.*.dirpath": Accepts((STR, NULL)),
    "trainer.max_epochs": Accepts((INT, NULL), -1),  # -1: no limit (Lightning)
    "trainer.devices": Accepts((INT, STR, LIST)),
    # Lightning's precisions, and cxrnet's auto (cxrnet.hardware).
    "trainer.precision": Accepts((STR, INT), choices=PRECISIONS),
    "trainer.num_nodes": Accepts((INT,), 1),
    "threshold.value": Accepts((FLOAT, NULL), *PROBABILITY),
    "threshold.min_sensitivity": Accepts((FLOAT,), *PROBABILITY),
    "threshold.min_specificity": Accepts((FLOAT,), *PROBABILITY),
    "threshold.films": Accepts((STR, MAPPING, NULL)),
    "threshold.source": Accepts((STR, NULL)),
    "report.resamples": Accepts((INT,), 0),
    "report.top_k_wrong": Accepts((INT,), 0),
    "report.level": Accepts((FLOAT,), 0.0, 1.0),
    "report.pointing_game_max_films": Accepts((INT, NULL), 1),
    # null: no heartbeat, or no grace period (cxrnet.search.storage).
    "hparams_search.heartbeat_s": Accepts((INT, NULL), 1),
    "hparams_search.grace_s": Accepts((INT, NULL), 0),
}


# Settings passed to Lightning's and torch's own classes, whose arguments take None for their
# default (``trainer.limit_train_batches=null``): null is a value there too.
NULLABLE = ("trainer.", "callbacks.", "logger.")


def declared(key: str) -> Accepts | None:
    return next((a for pattern, a in DECLARED.items() if fnmatch.fnmatchcase(key, pattern)), None)


def accepts_for(key: str, reference: Any) -> Accepts | None:
    """What ``key`` takes: declared, else the kind of its reference value (a float takes an
    int too); None where neither says (a null or interpolated reference): not checked."""
    found = declared(key)
    if found is not None:
        return found
    kind = kind_of(reference)
    if kind == NULL:
        return None
    # An interpolated reference (``${paths.output_dir}/checkpoints``, ``${monitor}``) is text.
    kinds = (FLOAT, INT) if kind == FLOAT else (kind,)
    if kind == MAPPING:  # a config node null switches off (model.scheduler=null: none)
        kinds = (MAPPING, NULL)
    return Accepts((*kinds, NULL) if key.startswith(NULLABLE) else kinds)


def fits(value: Any, accepts: Accepts) -> bool:
    """``value`` is of a kind (and in the range) ``accepts`` takes."""
    kind = kind_of(value)
    if kind == STR and "${" in value:
        return True  # an interpolation: its kind is its target's, checked there
    if kind == INT and FLOAT in accepts.kinds:
        kind = FLOAT
    if kind not in accepts.kinds:
        return False
    if accepts.choices and value not in accepts.choices:
        return False
    if kind in (INT, FLOAT):
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if accepts.minimum is not None and value < accepts.minimum:
            return False
        if accepts.maximum is not None and value > accepts.maximum:
            return False
    return True


def leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, value)`` of every leaf; a list, and an empty mapping, is one leaf."""
    for name, value in tree.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            yield from leaves(value, f"{key}.")
        else:
            yield key, value


def _lookup(tree: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_setting_types(values: Mapping[str, Any], reference: Mapping[str, Any]) -> None:
    """Every leaf of ``values`` has a kind (and range) its key takes, or ``ConfigError`` naming
    the first that has not. A key the reference lacks, or a setting it holds as a group (a
    mapping given as one value), is compared with what the reference holds there."""
    for key, value in leaves(values):
        present, reference_value = _lookup(reference, key)
        accepts = accepts_for(key, reference_value if present else None)
        if accepts is None or fits(value, accepts):
            continue
        raise ConfigError(
            f"{key}={_shown(value)} is not a valid value: {key} takes {accepts.describe()} "
            f"(conf/ gives {_shown(reference_value)}); e.g. {key}="
            f"{_example(reference_value, accepts)}"
        )


def _shown(value: Any) -> str:
    """A value as it is written on the command line (null, true, [a,b])."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value)
    return repr(value).replace("'", "").replace(" ", "")


def _example(reference: Any, accepts: Accepts) -> str:
    if reference is not None and fits(reference, accepts):
        return reference if isinstance(reference, str) else _shown(reference)
    examples = {INT: "1", FLOAT: "0.5", BOOL: "true", STR: "<text>", LIST: "[a,b]"}
    examples[MAPPING] = "{name:value}"
    return examples.get(accepts.kinds[0], "null")
