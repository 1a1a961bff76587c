"""``data.bulk.collector_paused``: no collection while a build runs, what it built frozen after a
success, nothing frozen after a failure, and the collector as it was."""

from __future__ import annotations

import gc

import pytest

from cxrnet.data.bulk import collector_paused


def test_the_collector_is_off_inside_and_the_build_frozen_after() -> None:
    gc.unfreeze()
    try:
        with collector_paused():
            assert not gc.isenabled()
            built = [[i] for i in range(1000)]
            with collector_paused():  # nested: the outer block decides
                assert not gc.isenabled()
            assert not gc.isenabled() and gc.get_freeze_count() == 0
        assert gc.isenabled() and gc.get_freeze_count() >= len(built)
    finally:
        gc.unfreeze()


def test_a_failed_build_freezes_nothing_and_turns_the_collector_back_on() -> None:
    gc.unfreeze()
    with pytest.raises(ValueError), collector_paused():
        raise ValueError("bad film")
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_collector_that_was_off_stays_off() -> None:
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
