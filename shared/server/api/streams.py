"""A cap on the event streams one API key holds open (SSE_MAX_STREAMS_PER_KEY), in this process.

Each open stream holds a task, a store poll and a socket, so one key cannot hold the server's share
of them. The count is per API process (each replica keeps its own): the cap bounds what one key costs
one process. A slot is taken before the stream answers (over the cap: 429) and given back when the
response is over, however it ends: the `final`, the client going away, a send that timed out, an
error, a HEAD request whose stream never started, or the server shutting down.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sse_starlette import EventSourceResponse
from starlette.types import Receive, Scope, Send


class Slot:
    """One open stream's place; `release` is idempotent."""

    def __init__(self, owner: StreamSlots, who: str):
        self._owner, self.who, self._held = owner, who, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._give_back(self.who)


class StreamSlots:
    def __init__(self, per_key: int):
        #: 0: no cap
        self.per_key = per_key
        self._open: Counter[str] = Counter()

    def take(self, who: str) -> Slot | None:
        """A slot for `who`, or None when it holds `per_key` streams already. (The event loop is single-threaded
        and this never awaits: checking and counting cannot interleave.)"""
        if self.per_key and self._open[who] >= self.per_key:
            return None
        self._open[who] += 1
        return Slot(self, who)

    def open(self, who: str) -> int:
        return self._open[who]

    def _give_back(self, who: str) -> None:
        self._open[who] -= 1
        if self._open[who] <= 0:
            del self._open[who]


class SlottedEventSource(EventSourceResponse):
    """An EventSourceResponse that gives its slot back once it is over, however it ended."""

    def __init__(self, content: Any, *, slot: Slot, **kwargs: Any):
        super().__init__(content, **kwargs)
        self.slot = slot

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()
