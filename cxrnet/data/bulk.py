"""Building many objects at once: a data module's setup and a public dataset's listing create
hundreds of thousands of records, paths and tuples, all kept, none in a cycle.

Python's cyclic collector runs a full collection every so many thousand allocations, and each
scans every object alive; while a listing grows, that is quadratic work (4 of the 12 s of a
warm start at 377,110 films). ``collector_paused`` turns it off for the build, then moves what
was built into the collector's permanent generation (``gc.freeze``): the records live as long
as the run, and the first collection after the build, and every one during training, would
otherwise scan them all again (another 2 s at 377,110 films). Cyclic garbage made inside the
block is kept with them; the builds make none that matters.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off inside the block; after it, what was built frozen (on
    success only) and the collector as it was. Nested blocks leave both to the outermost."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    except BaseException:
        # A failed build's traceback holds its frames in a cycle: left to the collector.
        if enabled:
            gc.enable()
        raise
    if enabled:
        gc.freeze()
        gc.enable()
