"""Defer CPython's full garbage collections while a big job is taken in.

Validating an 88k-item job builds about a million Python objects. Each time the allocation
counters tip over, CPython runs a full (generation 2) collection, which walks every object in the
process with the GIL held: 45-350 ms each, during which no other request, `/healthz` included, is
answered. No thread or process split of the parse avoids that; what does is not running full
collections while the job is being built. The young generations are still collected, so short-lived
cycles are freed as usual.

Once the request is over, its objects are freed by reference counting (a job holds no cycles), so
the full collection that follows has little to walk. While any submission is in flight the
deferral holds; the submissions themselves are bounded (VALIDATION_CONCURRENCY, VALIDATION_TIMEOUT_S,
MAX_BODY_BYTES), and the previous thresholds come back when the last one ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: a full collection only after this many gen-1 collections: never, in practice, during one request
_DEFERRED = 1_000_000

_lock = threading.Lock()
_holders = 0
_saved: tuple[int, int, int] | None = None


@contextmanager
def full_collections_deferred() -> Iterator[None]:
    """No full collection inside the block (across threads and overlapping blocks)."""
    global _holders, _saved
    with _lock:
        if _holders == 0:
            _saved = gc.get_threshold()
            gc.set_threshold(_saved[0], _saved[1], _DEFERRED)
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _saved is not None:
                gc.set_threshold(*_saved)
                _saved = None
