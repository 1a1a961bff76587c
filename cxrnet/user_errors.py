"""Errors a user causes and fixes: a wrong setting or a file that cannot be used.

Entry points print these as one line and exit with status 2, without a traceback
(``cxrnet.cli.exit_codes``); anything else is a bug or a fault and keeps its traceback.
Two kinds: a setting that cannot work (``ConfigError`` and its kinds) and data on disk that is
not what cxrnet expects (``DataError``).
"""


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and the fix."""


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, damaged or not plain data; the message names it."""


class EnsembleError(ConfigError):
    """A fold ensemble that cannot be built or loaded: a fold failed, is missing or appears
    twice, or a manifest is unreadable; the message names the fold or the file."""


class DataError(ValueError):
    """The data on disk is not what cxrnet expects; the message names the path and the fix."""
