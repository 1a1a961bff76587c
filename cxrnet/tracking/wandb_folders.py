"""The folders W&B writes outside the run folder, checked before a run starts.

W&B keeps its settings, its cache and offline artifacts' staging files under the user's home
(``~/.config/wandb``, ``~/.cache/wandb``, ``~/.local/share/wandb``) unless its variables name
other folders. On a cluster node whose HOME is read-only, or a container whose HOME is not a
folder, that failed in the middle of starting training with a traceback; checked before any
data work, it is one line naming the folder and the variable that moves it. No W&B import here:
the check runs before torch and W&B are imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from cxrnet.publish import unwritable_reason
from cxrnet.user_errors import ConfigError

# (variable, default below HOME): every folder W&B writes outside WANDB_DIR (the run folder).
WANDB_FOLDERS = (
    ("WANDB_CONFIG_DIR", ".config/wandb"),
    ("WANDB_CACHE_DIR", ".cache/wandb"),
    ("WANDB_DATA_DIR", ".local/share/wandb"),
)


def check_wandb_folders(environ: Mapping[str, str] | None = None) -> None:
    """Each folder W&B will write can be made and written; else a ``ConfigError`` naming it."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    for variable, default in WANDB_FOLDERS:
        folder = Path(env[variable]) if env.get(variable) else home / default
        reason = unwritable_reason(folder)
        if reason is not None:
            raise ConfigError(
                f"logger=wandb: W&B cannot write {folder} ({reason}); set {variable} (or HOME) "
                "to a folder you can write, or log without W&B (logger=csv)"
            )
