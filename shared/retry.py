"""Bounded retries with exponential backoff for HTTP calls (RunPod, our API)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

T = TypeVar("T")


def transient(e: BaseException) -> bool:
    """429, 5xx and connection problems are worth another try; anything else is not."""
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code == 429 or e.response.status_code >= 500
    return isinstance(e, httpx.TransportError)


async def with_retries(call: Callable[[], Awaitable[T]], *, attempts: int,
                       retryable: Callable[[BaseException], bool] = transient, max_wait_s: float = 8) -> T:
    async for attempt in AsyncRetrying(stop=stop_after_attempt(attempts), reraise=True,
                                       wait=wait_exponential(multiplier=0.5, max=max_wait_s),
                                       retry=retry_if_exception(retryable)):
        with attempt:
            return await call()
    raise AssertionError("unreachable")
