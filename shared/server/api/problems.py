"""What a client is told when the server fails, and what the log is told.

An error sent to a client never names a setting, a file path, a URL or a driver's message: those
help an attacker and mean nothing to a caller. The client gets a generic sentence for the kind of
failure (the store, the queue, RunPod, the configuration), its HTTP status, `Retry-After` when
waiting helps, and an error id. The log gets the full text under the same id (WARNING for an
outside service that failed, ERROR with the traceback for anything else), so an operator finds it.

Errors about the caller's own input are not failures of the server: `InputError` (422, every
issue), `PayloadTooLarge` (413, a job over its transport's size limit: the size, the limit and what
to do) and `NotFound` (404, the job id asked for) reach the client as they are (handlers in app.py).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

from shared.contracts.errors import ConfigError, QueueError, QueueUnavailable, StoreError, StoreUnavailable
from shared.queue.runpod import RunpodError
from shared.server.api.auth import RateLimiterUnavailable
from shared.server.api.tokens import TokenKeysUnavailable

log = logging.getLogger("shared.server.api")

#: seconds a client is asked to wait after an outage (a 503 with Retry-After)
RETRY_AFTER_S = 5


def error_id() -> str:
    """12 hex digits, quoted to the client and written to the log."""
    return secrets.token_hex(6)


@dataclass(frozen=True)
class Problem:
    status: int
    message: str
    retry: bool = False


#: most specific first: the first class an error is an instance of decides
PROBLEMS: list[tuple[type[BaseException], Problem]] = [
    (RateLimiterUnavailable, Problem(503, "the rate limiter is unavailable; try again shortly", retry=True)),
    (StoreUnavailable, Problem(503, "the job store did not answer; try again shortly", retry=True)),
    (StoreError, Problem(503, "the job store could not serve this request")),
    (QueueUnavailable, Problem(503, "the job queue did not answer; try again shortly", retry=True)),
    (QueueError, Problem(503, "the job queue could not serve this request")),
    (RunpodError, Problem(502, "RunPod could not serve this request")),
    (TokenKeysUnavailable, Problem(503, "the keys that check access tokens could not be fetched; try again shortly",
                                   retry=True)),
    (ConfigError, Problem(500, "the server is not configured to serve this request")),
]
UNEXPECTED = Problem(500, "the server could not serve this request")


def problem_of(e: BaseException) -> Problem:
    return next((p for cls, p in PROBLEMS if isinstance(e, cls)), UNEXPECTED)


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, str]
    headers: dict[str, str]


def answer(e: BaseException, *, where: str) -> Answer:
    """Log `e` in full under a new error id; return what the client may see. `where`: e.g. "GET /v1/jobs"."""
    p, eid = problem_of(e), error_id()
    if p.status in (502, 503):  # an outside service failed: the message says enough
        log.warning("%s failed [error id %s]: %s: %s", where, eid, type(e).__name__, e)
    else:
        log.error("%s failed [error id %s]: %s: %s", where, eid, type(e).__name__, e, exc_info=e)
    headers = {"Retry-After": str(RETRY_AFTER_S)} if p.retry else {}
    return Answer(p.status, {"detail": f"{p.message} (error id {eid})", "error_id": eid}, headers)
