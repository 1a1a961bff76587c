"""Which image cache a listing of films was last keyed to: the warm start that stats no film.

The cache key (``cxrnet.data.cache``) covers each file's size and modification time, so
finding the cache means a stat per film; on 377,000 films on a network file system that is
most of a warm start. With ``data.verify_files=false`` a start instead looks up the listing
(the films' paths in cache order, the decode settings and decoder versions) here, and takes
each film's resolved path, size and mtime from the cache's own ``index.csv``.

What that trusts: that no film named in the listing was edited or replaced in place since the
cache was built (such a film keeps its old pixels, and the duplicate check its old digest). A
film added, removed or renamed changes the listing, which then matches nothing, and the start
checks every file as usual.

``<cache_dir>/listings/<digest>`` holds the cache folder's name; it is written (atomically)
after every start that opened or built a cache, so verified starts keep it current.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from cxrnet.data.cache_entry import CACHE_FORMAT, COMPLETE_FILE, read_index
from cxrnet.data.decode import DecodeParams, decoder_fingerprint
from cxrnet.data.files import Facts, FileFacts
from cxrnet.data.records import Record
from cxrnet.publish import write_file

log = logging.getLogger(__name__)
LISTINGS_FOLDER = "listings"


# The last listing's digest: a start looks its listing up, then notes it again once the cache
# is open, and the films are the same (the decoder's versions cannot change within a process).
_last: tuple[dict[str, object], list[str], str] | None = None


def _pointer(records: Sequence[Record], params: DecodeParams, cache_dir: Path) -> Path:
    global _last
    paths = [str(record.path) for record in records]
    settings = params.as_dict()
    if _last is not None and _last[0] == settings and _last[1] == paths:
        digest = _last[2]
    else:
        payload = {
            "format": CACHE_FORMAT,
            "params": settings,
            "decoder": decoder_fingerprint(paths),
            "paths": paths,
        }
        digest = hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()
        _last = (settings, paths, digest)
    return Path(cache_dir) / LISTINGS_FOLDER / digest[:32]


def remember_listing(
    records: Sequence[Record], params: DecodeParams, cache_dir: Path, entry: Path
) -> None:
    """Note that ``records`` (in this order) with ``params`` were last served by ``entry``."""
    pointer = _pointer(records, params, cache_dir)
    try:
        if pointer.read_text(encoding="utf-8").strip() == entry.name:
            return  # a warm start writes nothing
    except OSError:
        pass
    try:
        write_file(pointer, lambda temporary: temporary.write_text(entry.name + "\n", "utf-8"))
    except OSError as error:
        # A cache others built and this job only reads (a read-only shared folder) serves a
        # start all the same; only verify_files=false then checks every file.
        log.info(
            "cannot note this listing in %s (%s): verify_files=false will check files",
            pointer.parent,
            error.strerror,
        )


def trusted_facts(records: Sequence[Record], params: DecodeParams, cache_dir: Path) -> Facts | None:
    """Each record's facts as the cache last keyed to this listing recorded them, or None when
    no complete cache was keyed to it (the caller then stats the files)."""
    pointer = _pointer(records, params, cache_dir)
    try:
        name = pointer.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    entry = Path(cache_dir) / name
    if not name or not (entry / COMPLETE_FILE).is_file():
        return None
    index = read_index(entry)
    if index is None or len(index.paths) != len(records):
        return None  # not the cache this listing was keyed to (edited by hand?): check files
    facts = map(FileFacts, index.paths, index.sizes, index.mtimes)
    return {record.path: found for record, found in zip(records, facts, strict=True)}
