"""Errors for bad input: each names the file or folder, what was expected, and the fix."""


class DataError(ValueError):
    """The data on disk is not what cxrnet expects; the message names the path and the fix."""
