"""Errors a user causes and fixes: a wrong setting or a file that cannot be used.

Entry points print these as one line and exit with status 2, without a traceback
(``cxrnet.cli.errors``); anything else is a bug or a fault and keeps its traceback.
``cxrnet.data.errors.DataError`` (bad data on disk) is the other kind of user error.
"""


class ConfigError(ValueError):
    """A setting that cannot work; the message names the key, the value and the fix."""


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, damaged or not plain data; the message names it."""


class EnsembleError(ConfigError):
    """A fold ensemble that cannot be built or loaded: a fold failed, is missing or appears
    twice, or a manifest is unreadable; the message names the fold or the file."""
