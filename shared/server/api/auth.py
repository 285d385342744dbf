"""Bearer API keys (kept only as SHA-256 digests) and a per-key rate limit.

API_KEYS holds comma-separated entries, each `sha256:<hex digest>` (preferred: the key itself
never sits in the environment) or a plain key, hashed as soon as it is read. No key: 401.
A wrong key: 403. Health routes are open.

The rate limit is a sliding window per key: Upstash's (upstash-ratelimit) when the queue is
configured, so every API replica shares it; an in-process window otherwise. When Upstash does not
answer, the limiter can neither let a request through nor refuse it: `RateLimiterUnavailable`,
which the API answers 503 with Retry-After (it fails closed: a key is never let past its limit).

`/readyz` takes a key without demanding one (app.py's `MaySeeDetails`): a valid key, or a server with no
API_KEYS at all, sees the details.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import defaultdict, deque
from dataclasses import dataclass

from pydantic import SecretStr

from shared.contracts.errors import QueueUnavailable
from shared.contracts.settings import Settings


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class KeyRing:
    def __init__(self, digests: frozenset[str]):
        self._digests = digests

    @classmethod
    def from_setting(cls, keys: SecretStr | None) -> KeyRing:
        entries = [e.strip() for e in (keys.get_secret_value() if keys else "").split(",") if e.strip()]
        return cls(frozenset(e.removeprefix("sha256:").lower() if e.startswith("sha256:") else digest(e)
                             for e in entries))

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def identify(self, key: str) -> str | None:
        """The key's id (a digest prefix, safe to log) if it is one of ours."""
        d = digest(key)
        found = any(hmac.compare_digest(d, known) for known in self._digests)
        return d[:12] if found else None


class RateLimiterUnavailable(QueueUnavailable):
    """The rate limiter's store (Upstash) did not answer: a request can be neither let through nor refused.

    The API answers 503 with Retry-After (shared/server/api/problems.py); the message, which names the
    Upstash URL and the client's error, goes to the log only."""


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int
    reset_s: float


class MemoryRateLimit:
    """A sliding window in this process."""

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self._hits: dict[str, deque[float]] = defaultdict(deque)
        self._lock = asyncio.Lock()

    async def check(self, who: str) -> Verdict:
        now = time.monotonic()
        async with self._lock:
            hits = self._hits[who]
            while hits and hits[0] <= now - 60:
                hits.popleft()
            if len(hits) >= self.per_minute:
                return Verdict(False, self.per_minute, 0, hits[0] + 60 - now)
            hits.append(now)
            return Verdict(True, self.per_minute, self.per_minute - len(hits), 60.0)

    async def close(self) -> None: ...


class UpstashRateLimit:
    """upstash-ratelimit's sliding window: shared by every API replica."""

    def __init__(self, settings: Settings):
        from upstash_ratelimit.asyncio import Ratelimit, SlidingWindow
        from upstash_redis.asyncio import Redis

        self.per_minute = settings.rate_limit_per_minute
        self.timeout_s = settings.queue_timeout_s
        self.url = settings.upstash_redis_rest_url
        token = settings.upstash_redis_rest_token.get_secret_value()
        self._redis = Redis(url=settings.upstash_redis_rest_url, token=token, rest_retries=0, allow_telemetry=False)
        self._limit = Ratelimit(redis=self._redis, limiter=SlidingWindow(max_requests=self.per_minute, window=60),
                                prefix=f"{settings.queue_prefix}:ratelimit")

    async def check(self, who: str) -> Verdict:
        try:
            async with asyncio.timeout(self.timeout_s):
                r = await self._limit.limit(who)
        except Exception as e:  # refused, timed out, a wrong token: the limiter cannot decide
            reason = f"no answer in {self.timeout_s:g} s" if isinstance(e, TimeoutError) else f"{type(e).__name__}: {e}"
            raise RateLimiterUnavailable(f"rate limiter at {self.url}: {reason}") from e
        return Verdict(r.allowed, r.limit, r.remaining, max(0.0, r.reset - time.time()))

    async def close(self) -> None:
        await self._redis.close()


def rate_limiter(settings: Settings) -> MemoryRateLimit | UpstashRateLimit | None:
    if settings.rate_limit_per_minute == 0:
        return None
    if settings.upstash_redis_rest_url and settings.upstash_redis_rest_token:
        return UpstashRateLimit(settings)
    return MemoryRateLimit(settings.rate_limit_per_minute)
