"""The entry points silence third-party output a cxrnet user cannot act on (issue 32 item 5),
and nothing else."""

from __future__ import annotations

import logging
import warnings

import pytest
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from cxrnet.cli import quiet


@pytest.fixture
def silenced():
    loggers = [logging.getLogger(name) for name in quiet._TIP_LOGGERS]
    before = [list(logger.filters) for logger in loggers]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.silence_known_noise()
        quiet.silence_known_noise()  # twice: still one filter per logger
        yield caught
    for logger, filters in zip(loggers, before, strict=True):
        logger.filters = filters


def test_the_srun_hint_the_tips_and_the_leafspec_warning_are_silenced(
    silenced: list[warnings.WarningMessage], caplog: pytest.LogCaptureFixture
) -> None:
    warnings.warn(
        "The `srun` command is available on your system but is not used. HINT: ...",
        PossibleUserWarning,
        stacklevel=1,
    )
    warnings.warn(
        "`isinstance(treespec, LeafSpec)` is deprecated, use ... instead.",
        FutureWarning,
        stacklevel=1,
    )
    warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in silenced] == ["a warning of the user's own"]
    with caplog.at_level(logging.INFO):
        rank_zero_info("💡 Tip: For seamless cloud logging, try installing [litlogger] ...")
        rank_zero_info("GPU available: False, used: False")
    assert caplog.messages == ["GPU available: False, used: False"]
    for name in quiet._TIP_LOGGERS:
        assert sum(isinstance(f, quiet._NoTips) for f in logging.getLogger(name).filters) == 1
