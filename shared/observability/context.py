"""The ids a log record carries: which job, shard, item, worker and attempt it was written for.

Work sets them where it happens (`log_context(job=..., shard=...)` in the queue worker, the platform
handlers and the runner) and every record logged inside picks them up through `IdsFilter`, which
handler/logs.py puts on the root handler: a JSON line (LOG_FORMAT=json) carries them as fields, a plain
line ends with them. Nothing has to pass ids down the call chain, and a line written deep in a store
client or in vLLM still says which job it was for.

The ids live in a `ContextVar`, so they follow asyncio: a task copies the context it was created in
(the runner's worker tasks, created inside a job's context, carry its job and shard), `asyncio.to_thread`
copies it into the thread, and jobs running side by side on one event loop never see each other's ids.

Only ids go here (short strings and numbers), never prompt or result text: these fields go into every
line logged inside.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

#: the ids a record may carry, in the order they are shown
FIELDS = (
    "job",  #: the job's id (as stored: an owner's job id carries its owner prefix)
    "shard",  #: the shard's number, 0-based (a job of one shard: 0)
    "item",  #: the item's custom_id
    "worker",  #: the queue worker's id (`llm-jobs worker --worker-id`, host-pid by default)
    "attempt",  #: the queue's delivery attempt of this shard, from 1
    "request",  #: the platform's own id for this call: RunPod's request id, Modal's function call id
)

Ids = Mapping[str, str | int]

_EMPTY: Ids = MappingProxyType({})
_IDS: ContextVar[Ids] = ContextVar("llm_jobs_log_ids", default=_EMPTY)


def current_ids() -> dict[str, str | int]:
    """The ids set here now (a copy), in FIELDS order."""
    ids = _IDS.get()
    return {k: ids[k] for k in FIELDS if k in ids}


@contextmanager
def log_context(**ids: str | int | None) -> Iterator[None]:
    """Add `ids` to the current ones (an id given as None is left as it was) until the block ends.

    An unknown name is a ValueError: a typo would otherwise go unseen. Exiting in another context than
    the one entered (an async generator closed from another task) leaves that context alone: the
    context it was entered in was a copy, and dies with its task.
    """
    unknown = set(ids) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log ids {sorted(unknown)}: known are {', '.join(FIELDS)}")
    token = _IDS.set(MappingProxyType({**_IDS.get(), **{k: v for k, v in ids.items() if v is not None}}))
    try:
        yield
    finally:
        try:
            _IDS.reset(token)
        except ValueError:  # "created in a different Context": see above
            pass


class IdsFilter(logging.Filter):
    """Puts the current ids on each record as attributes (`record.job`, `record.item`, ...); an id not set
    is not added, so formatters can leave it out. Lets every record through."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _IDS.get().items():
            setattr(record, key, value)
        return True


def record_ids(record: logging.LogRecord) -> dict[str, str | int]:
    """The ids `IdsFilter` put on `record`, in FIELDS order."""
    return {k: v for k in FIELDS if (v := getattr(record, k, None)) is not None}
