"""Bounded retries with exponential backoff for HTTP calls (RunPod, our API), and the one rule
for what is worth retrying."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

T = TypeVar("T")

#: answers that say "try again later": rate limited, or a gateway or server that is briefly away
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})


def transient(e: BaseException) -> bool:
    """A RETRYABLE_STATUS answer or a connection problem is worth another try; anything else is not."""
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code in RETRYABLE_STATUS
    return isinstance(e, httpx.TransportError)


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int,
                       retryable: Callable[[BaseException], bool] = transient, max_wait_s: float = 8) -> T:
    async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), reraise=True,
                                       wait=wait_exponential(multiplier=0.5, max=max_wait_s),
                                       retry=retry_if_exception(retryable)):
        with attempt:
            return await call()
    raise AssertionError("unreachable")
