"""RunPod's serverless endpoint API over httpx: /run, /status, /stream, /cancel, /health.

Used by the API's RunPod dispatcher and the SDK's `runpod` backend. It works the same against
api.runpod.ai and against `llm-jobs serve-runpod` (only the base URL changes). Every call has a
timeout; 429, 502-504 and connection errors (`transient`) are retried with bounded backoff; the API
key is sent as a bearer token and never logged. Job states are RunPod's: IN_QUEUE, IN_PROGRESS,
COMPLETED, FAILED, CANCELLED, TIMED_OUT (the official SDK forgets CANCELLED in places; here every
one of them ends a wait).

`/run` is the exception to the retries: every /run that RunPod reads starts a job, and RunPod has no
idempotency key and no way to list requests or find one by its input (its queue-based operations
are run, runsync, status, stream, cancel, retry, purge-queue and health). So /run is sent again only
when the first one provably never got in: no connection was made, or RunPod answered 429. Once the
request may have been read (a timeout waiting for the answer, a dropped connection, a 5xx), it is
not sent again: `RunpodUnsure` says the job may have started.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from shared.contracts.errors import LLMJobsError
from shared.contracts.models import JobStatus
from shared.contracts.retry import transient, with_retries
from shared.contracts.settings import DEFAULTS

#: RunPod's job states, as the statuses of our jobs
STATUSES: dict[str, JobStatus] = {"IN_QUEUE": JobStatus.queued, "IN_PROGRESS": JobStatus.running,
                                  "COMPLETED": JobStatus.completed, "FAILED": JobStatus.failed,
                                  "CANCELLED": JobStatus.cancelled, "TIMED_OUT": JobStatus.failed}
#: the states a RunPod job never leaves
FINAL_STATES = frozenset(state for state, status in STATUSES.items() if status.terminal)


class RunpodError(LLMJobsError):
    """RunPod refused a call, or stayed unreachable through the retries."""


class RunpodUnsure(RunpodError):
    """A /run whose answer never came: RunPod may have started the job, or not. It is not sent again."""


def never_got_in(e: BaseException) -> bool:
    """True when RunPod cannot have read the request: no connection was made (connect error or
    timeout, no free connection in the pool), or it refused it with 429. Only then is /run retried."""
    if isinstance(e, httpx.HTTPStatusError):
        return e.response.status_code == 429
    return isinstance(e, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


class RunpodClient:
    def __init__(self, endpoint_id: str, api_key: str | None = None, *,
                 base_url: str = DEFAULTS.runpod_base_url, timeout_s: float = DEFAULTS.http_timeout_s,
                 attempts: int = 4,
                 transport: httpx.AsyncBaseTransport | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(base_url=f"{base_url.rstrip('/')}/{endpoint_id}", headers=headers,
                                       timeout=timeout_s, transport=transport)
        self.attempts = attempts

    async def _call(self, method: str, path: str, *, retryable: Callable[[BaseException], bool] = transient,
                    **kw: Any) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            r = await self._http.request(method, path, **kw)
            r.raise_for_status()
            return r.json()

        try:
            return await with_retries(once, attempts=self.attempts, retryable=retryable)
        except httpx.HTTPStatusError as e:
            raise RunpodError(f"runpod {method} {path}: HTTP {e.response.status_code}: {e.response.text[:300]}") from e
        except httpx.HTTPError as e:
            raise RunpodError(f"runpod {method} {path}: {type(e).__name__}: {e}") from e

    async def run(self, job_input: Any) -> dict[str, Any]:
        """Start one RunPod job: `{"id", "status"}`. Raises RunpodUnsure when the request may have
        started a job whose id never came back (it is not sent again: that could start a second)."""
        try:
            return await self._call("POST", "/run", json={"input": job_input}, retryable=never_got_in)
        except RunpodError as e:
            cause = e.__cause__
            if cause is None or never_got_in(cause):
                raise
            if isinstance(cause, httpx.HTTPStatusError) and cause.response.status_code < 500:
                raise  # refused (401, 400, 404...): no job was made
            raise RunpodUnsure(f"{e} (RunPod may have started the job: /run is not sent again, so it cannot "
                               "start twice)") from cause

    async def status(self, run_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/status/{run_id}")

    async def stream(self, run_id: str) -> dict[str, Any]:
        """The outputs produced since the last call (RunPod hands each out once)."""
        return await self._call("GET", f"/stream/{run_id}")

    async def cancel(self, run_id: str) -> dict[str, Any]:
        return await self._call("POST", f"/cancel/{run_id}")

    async def health(self) -> dict[str, Any]:
        return await self._call("GET", "/health")

    async def aclose(self) -> None:
        await self._http.aclose()
