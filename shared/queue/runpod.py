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

RunPod limits a /run body to 10 MB and a /runsync body to 20 MB (`RUN_MAX_BYTES`,
`RUNSYNC_MAX_BYTES`; "Payload Limit" in https://docs.runpod.io/serverless/references/operations,
read as MiB). `run` measures the body it is about to send and raises `PayloadTooLarge` when it is
over, so no request is made; `run_body` does that measurement alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx

from shared.contracts.errors import LLMJobsError, PayloadTooLarge
from shared.contracts.models import JobStatus
from shared.contracts.retry import transient, with_retries
from shared.contracts.settings import DEFAULTS
from shared.contracts.shards import is_shard_ref

#: RunPod's job states, as the statuses of our jobs
STATUSES: dict[str, JobStatus] = {"IN_QUEUE": JobStatus.queued, "IN_PROGRESS": JobStatus.running,
                                  "COMPLETED": JobStatus.completed, "FAILED": JobStatus.failed,
                                  "CANCELLED": JobStatus.cancelled, "TIMED_OUT": JobStatus.failed}
#: the states a RunPod job never leaves
FINAL_STATES = frozenset(state for state, status in STATUSES.items() if status.terminal)

#: RunPod's payload limit on a /run body (asynchronous jobs: what the dispatcher and the SDK send)
RUN_MAX_BYTES = 10 * 1024 * 1024
#: RunPod's payload limit on a /runsync body
RUNSYNC_MAX_BYTES = 20 * 1024 * 1024
#: how a refusal names the transport
TRANSPORT = "RunPod's /run (DISPATCHER=runpod)"


def run_body(job_input: Any, *, limit: int = RUN_MAX_BYTES) -> bytes:
    """The /run body for this input, as httpx would encode it (compact JSON, UTF-8); PayloadTooLarge when
    it is over RunPod's limit. CPU work on the whole input: call it in a thread for a big job."""
    body = json.dumps({"input": job_input}, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if len(body) > limit:
        raise PayloadTooLarge(transport=TRANSPORT, size=len(body), limit=limit, reference=is_shard_ref(job_input))
    return body


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
        started a job whose id never came back (it is not sent again: that could start a second), and
        PayloadTooLarge, sending nothing, when the body is over RunPod's /run limit."""
        body = run_body(job_input)
        try:
            return await self._call("POST", "/run", content=body, headers={"Content-Type": "application/json"},
                                    retryable=never_got_in)
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
